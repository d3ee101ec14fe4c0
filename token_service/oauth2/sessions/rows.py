"""The rows the session store reads and writes, and the one liveness rule."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class Superseded(Exception):
    """The customer's entitlements changed between a grant's read and its write, which wrote
    nothing: the grant runs again on the changed data."""


class LoginRow(NamedTuple):
    id: str
    email: str
    password_hash: str | None
    status: str
    default_legal_entity_id: str | None
    entitlements_version: int  # read with the entitlements


class RefreshRow(NamedTuple):
    token_hash: str
    created_at: datetime
    consumed_at: datetime | None
    successor_hash: str | None
    session_id: str
    client_id: str
    customer_id: str
    scope: str
    legal_entity_id: str | None
    auth_time: datetime
    expires_at: datetime
    idle_expires_at: datetime
    revoked_at: datetime | None
    tokens_not_before: int | None
    customer_status: str
    entitlements_version: int  # the customer's, read with the entitlements


class SessionState(NamedTuple):
    revoked_at: datetime | None
    expires_at: datetime
    idle_expires_at: datetime
    tokens_not_before: int | None
    customer_status: str
    assigned: bool  # to the entity asked about (True when none was asked)


class NewSession(NamedTuple):
    """A refresh-token family about to start (a login)."""

    id: str
    customer_id: str
    client_id: str
    scope: str
    legal_entity_id: str | None
    auth_time: datetime
    created_at: datetime
    expires_at: datetime
    idle_expires_at: datetime


class Rotation(NamedTuple):
    """A refresh: the presented token consumed, its successor issued, the session moved."""

    session_id: str
    old_hash: str
    new_hash: str
    customer_id: str
    legal_entity_id: str | None
    previous_entity: str | None
    now: datetime
    idle_expires_at: datetime
    entitlements_version: int  # as read with the entitlements the new token was made from

    @property
    def switched(self) -> bool:
        return self.legal_entity_id != self.previous_entity


class NewCode(NamedTuple):
    """What an authorization code is bound to (RFC 6749 §4.1.2, RFC 7636, OIDC nonce)."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    customer_id: str
    browser_session_id: str | None
    scope: str
    legal_entity_id: str | None
    nonce: str | None
    auth_time: datetime


#: A stored code: what it is bound to, when it expires, and the family issued from it once
#: consumed (how a replay finds what to revoke).
CodeRow = NamedTuple(
    "CodeRow",
    [*NewCode.__annotations__.items(), ("expires_at", datetime), ("session_id", str | None)],
)


def refusal(state: RefreshRow | SessionState, now: datetime) -> str | None:
    """Why a session may no longer be used at `now`, or None while it lives: the one liveness
    rule, for refreshes and introspection alike."""
    if state.revoked_at is not None:
        return "The session was revoked."
    if now >= state.idle_expires_at or now >= state.expires_at:
        return "The session has expired."
    if state.customer_status != "active":
        return "The customer is blocked."
    return None
