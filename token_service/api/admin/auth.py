"""Who may call the admin API: a client holding `admin.read` (reads) or `admin.manage` (reads
and writes), with an access token it got through `client_credentials` (RFC 6750 bearer).

The token is verified like a resource server would (signature and `typ`, `iss`, `exp`, the
deny-list) and, since this service owns the client registry, against the client as it is now:
a deleted client or one whose ceiling lost the scope is refused at once, not at token expiry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app, request
from sqlalchemy import select

from ... import logs
from ...extensions import db
from ...kv import StoreUnavailable
from ...models import AuditEvent, Client
from ...revocation import is_denied
from ...scopes import split_scopes
from .errors import ApiError

READ_SCOPE = "admin.read"
MANAGE_SCOPE = "admin.manage"
REALM = "token-service admin"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: the client and what its token allows."""

    client_id: str
    scopes: frozenset[str]

    @property
    def actor(self) -> tuple[str, str]:
        """(actor_type, actor_id) for audit events and lifecycle functions."""
        return ("client", self.client_id)


def _challenge(error: str | None = None, description: str | None = None, **extra) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    parts.extend(f'{k}="{v}"' for k, v in extra.items())
    return "Bearer " + ", ".join(parts)


def _unauthorized(description: str, error: str = "invalid_token") -> ApiError:
    return ApiError(
        401,
        error,
        description,
        headers={"WWW-Authenticate": _challenge(error, description)},
    )


def _forbidden(description: str, scope: str) -> ApiError:
    challenge = _challenge("insufficient_scope", description, scope=scope)
    return ApiError(403, "insufficient_scope", description, headers={"WWW-Authenticate": challenge})


def bearer_token() -> str:
    """The token of `Authorization: Bearer ...` (RFC 6750 §2.1), or a 401."""
    header = request.headers.get("Authorization")
    if header is None:
        # "If the request lacks any authentication information ..., the resource server SHOULD
        # NOT include an error code or other error information." (RFC 6750 §3.1)
        raise ApiError(
            401,
            "unauthorized",
            "A bearer access token is required.",
            headers={"WWW-Authenticate": _challenge()},
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _unauthorized("The Authorization header must be 'Bearer <token>'.", "invalid_request")
    return token


def revoked_on_record(jti: str, iat: int) -> bool:
    """Whether a revocation of this access token was answered: each one is committed with its
    `access_token.revoked` audit event (oauth2/introspect.py), after the token was issued, so
    the search is an index range over the token's lifetime."""
    since = datetime.fromtimestamp(iat - 1, UTC)
    found = db.session.scalar(
        select(AuditEvent.id)
        .where(
            AuditEvent.at >= since,
            AuditEvent.action == "access_token.revoked",
            AuditEvent.target == jti,
        )
        .limit(1)
    )
    return found is not None


def authenticate(write: bool) -> Principal:
    """Verify the request's bearer token for a read or a write; raises ApiError otherwise."""
    settings = current_app.config["SETTINGS"]
    claims = current_app.extensions["keyring"].decode(bearer_token())
    if claims is None:
        raise _unauthorized("The access token is invalid.")
    # decode() vouches for the claims' types (resource.jose.well_formed), not for their values.
    exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
    client_id, scope = claims["client_id"], claims.get("scope", "")
    if claims.get("iss") != settings.issuer:
        raise _unauthorized("The access token is invalid.")
    if exp <= time.time():
        raise _unauthorized("The access token expired.")
    sid = claims.get("sid")
    try:
        revoked = is_denied(sid, jti, iat)
    except StoreUnavailable:
        # Admin changes commit to the database, the source of truth, so the admin API works
        # through a store outage and asks the database instead. An admin token has no
        # session: what stops it is its client's deletion or narrowing (checked below against
        # the client row) or a revocation of this very token, on record with its audit event.
        revoked = revoked_on_record(jti, iat)
    if revoked:
        raise _unauthorized("The access token was revoked.")

    needed = MANAGE_SCOPE if write else READ_SCOPE
    if sid is not None or claims.get("sub") != client_id:
        # A customer's token, whatever its scopes: the admin API is for clients only.
        raise _forbidden("Customer tokens cannot use the admin API.", needed)
    client = db.session.get(Client, client_id)
    if client is None:
        raise _unauthorized("The client of this access token no longer exists.")
    # admin.manage includes reading: a client that may change a thing may look at it.
    held = split_scopes(scope) & split_scopes(client.scope)
    allowed = {MANAGE_SCOPE} if write else {READ_SCOPE, MANAGE_SCOPE}
    if not held & allowed:
        raise _forbidden(f"The access token lacks the {needed} scope.", needed)
    logs.current().client_id = client_id
    return Principal(client_id=client_id, scopes=frozenset(held))
