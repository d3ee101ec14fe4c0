"""Revoking sessions and access tokens: the database row, the deny-list, the announcement.

Deny-list keys live as long as the longest access token could, then expire by themselves.
Every revocation is published on REVOCATION_CHANNEL as JSON:
`{"type": "sid" | "jti", "value": "...", "exp": <unix time until which to deny>, "reason": "..."}`.
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


def _deny(kind: str, value: str, ttl: int, reason: str) -> None:
    store = current_app.extensions["token_store"]
    try:
        store.set(f"deny:{kind}:{value}", b"1", ttl)
        message = {"type": kind, "value": value, "exp": int(time.time()) + ttl, "reason": reason}
        store.publish(REVOCATION_CHANNEL, json.dumps(message, separators=(",", ":")))
    except StoreUnavailable:
        # The database row is the source of truth; introspection fails closed while the
        # store is down, and the access tokens expire within their short lifetime.
        log.error("store unavailable: %s:%s not deny-listed", kind, value)


def deny_session(sid: str, reason: str) -> None:
    """Deny-list every access token of session `sid` for as long as they can live."""
    _deny("sid", sid, current_app.config["SETTINGS"].access_token_ttl_max, reason)


def deny_access_token(jti: str, ttl: int, reason: str) -> None:
    """Deny-list one access token until it expires."""
    if ttl > 0:
        _deny("jti", jti, ttl, reason)


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
    deny_session(session.id, reason)
