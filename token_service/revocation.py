"""Revoking sessions and access tokens: the database row, the deny-list, the announcement.

Deny-list entries in the store, each kept as long as the longest access token can live:
- `deny:sid:<sid>` = a unix time T: every access token of that session with `iat` < T is
  revoked. Tokens issued later (after a permission change, at the next refresh) are not, so one
  key serves both a revoked session (which gets no new tokens) and a changed one.
- `deny:jti:<jti>` = "1": that one access token is revoked.

Every entry is also published on REVOCATION_CHANNEL as JSON, for resource servers that follow:
`{"type": "sid" | "jti", "value": "...", "not_before": T (sid only), "exp": <unix time after
which the entry can be forgotten>, "reason": "..."}`.
"""

from __future__ import annotations

import json
import logging
import time

from flask import current_app

from . import audit
from .models import Session, utcnow
from .store import REVOCATION_CHANNEL, StoreUnavailable

log = logging.getLogger(__name__)


def _store():
    return current_app.extensions["token_store"]


def _announce(kind: str, value: str, ttl: int, reason: str, stored: bytes, **extra) -> bool:
    """Write a deny-list entry and publish it; False if the store is down."""
    try:
        store = _store()
        store.set(f"deny:{kind}:{value}", stored, ttl)
        message = {"type": kind, "value": value, **extra, "exp": int(time.time()) + ttl}
        message["reason"] = reason
        store.publish(REVOCATION_CHANNEL, json.dumps(message, separators=(",", ":")))
    except StoreUnavailable:
        # The database stays the source of truth for sessions; introspection of access tokens
        # fails closed while the store is down, and access tokens expire within minutes.
        log.error("store unavailable: %s deny-list entry not written", kind)
        return False
    return True


def deny_session(session: Session, reason: str) -> bool:
    """Revoke every access token issued so far in `session` (not those issued later)."""
    # iat has one-second resolution: deny the whole current second, so that no token issued
    # before this call survives. The session row remembers it, and the token endpoint waits
    # out the rest of the second before it issues this session's next token.
    not_before = int(time.time()) + 1
    session.tokens_not_before = not_before
    ttl = current_app.config["SETTINGS"].access_token_ttl_max + 1
    stored = str(not_before).encode()
    return _announce("sid", session.id, ttl, reason, stored, not_before=not_before)


def deny_access_token(jti: str, ttl: int, reason: str) -> bool:
    """Revoke one access token until it expires."""
    return ttl <= 0 or _announce("jti", jti, ttl, reason, b"1")


def is_denied(sid: str | None, jti: str, iat: int) -> bool:
    """True if this access token was revoked (one store round trip). Raises StoreUnavailable:
    callers fail closed."""
    keys = [f"deny:jti:{jti}"] if sid is None else [f"deny:jti:{jti}", f"deny:sid:{sid}"]
    values = _store().get_many(keys)
    if values[0] is not None:
        return True
    return sid is not None and values[1] is not None and iat < int(values[1])


def revoke_session(session: Session, reason: str, *, actor_type: str, actor_id: str | None) -> None:
    """Revoke a refresh-token family in the current transaction and deny-list its tokens."""
    if session.revoked_at is None:
        session.revoked_at = utcnow()
        session.revoked_reason = reason
        audit.record(
            "session.revoked",
            actor_type=actor_type,
            actor_id=actor_id,
            customer_id=session.customer_id,
            target=session.id,
            reason=reason,
        )
    deny_session(session, reason)
