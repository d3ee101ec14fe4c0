"""Audit events: who did what to whom. Added to the caller's transaction, never committed here.

Every value is made to fit its column here, whoever the caller: a value that does not fit (a
300-character username as the target of `login.throttled`) keeps a prefix and gains a digest of
the whole, so it stays distinct and searchable by prefix, and no caller can make the insert
fail (PostgreSQL refuses an over-long varchar, and a text containing NUL, outright).
"""

from __future__ import annotations

import hashlib
import logging

from .extensions import db
from .models import AuditEvent, utcnow

log = logging.getLogger("token_service.audit")

#: Column lengths of the audit table, read from the model so they cannot drift from it.
COLUMN_LENGTHS = {
    column.name: column.type.length
    for column in AuditEvent.__table__.columns
    if getattr(column.type, "length", None)
}
#: Longest text kept in `details` (a JSON column has no length, but a row should stay small).
DETAIL_LENGTH = 1024
MAX_DETAIL_ITEMS = 200
_DIGEST_LENGTH = 16


def fit(value: str, limit: int) -> str:
    """`value` if it is at most `limit` characters (and free of NUL), else a prefix of it,
    '#', and the start of its SHA-256: the same input always gives the same output."""
    value = value.replace("\x00", "\ufffd")
    if len(value) <= limit:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    keep = max(0, limit - _DIGEST_LENGTH - 1)
    return value[:keep] + "#" + digest[: limit - keep - 1]


def _fit_detail(value):
    if isinstance(value, str):
        return fit(value, DETAIL_LENGTH)
    if isinstance(value, list | tuple):
        return [_fit_detail(item) for item in value[:MAX_DETAIL_ITEMS]]
    if isinstance(value, dict):
        return {fit(str(k), 64): _fit_detail(v) for k, v in list(value.items())[:MAX_DETAIL_ITEMS]}
    return value


def _column(name: str, value: str | None) -> str | None:
    return None if value is None else fit(str(value), COLUMN_LENGTHS[name])


def row(
    action: str,
    *,
    actor_type: str,
    actor_id: str | None,
    customer_id: str | None = None,
    target: str | None = None,
    legal_entity_id: str | None = None,
    **details,
) -> dict:
    """One audit event's row, every value fitted to its column; not yet logged (`emit`).
    `legal_entity_id`: the entity the change happened in, whose company admins may read it."""
    return {
        "at": utcnow(),
        "action": _column("action", action),
        "actor_type": _column("actor_type", actor_type),
        "actor_id": _column("actor_id", actor_id),
        "customer_id": _column("customer_id", customer_id),
        "target": _column("target", target),
        "legal_entity_id": _column("legal_entity_id", legal_entity_id),
        "details": {fit(str(k), 64): _fit_detail(v) for k, v in details.items()},
    }


def emit(event: dict) -> None:
    """Log a stored event (without secrets: no audit field ever holds one)."""
    # %r: a value chosen by a caller (a username) cannot forge a log line with a newline.
    log.info(
        "%s actor=%s:%r customer=%r target=%r",
        event["action"],
        event["actor_type"],
        event["actor_id"],
        event["customer_id"],
        event["target"],
    )


def record(action: str, **fields) -> None:
    """Add one audit event in the current transaction, and log it. The token endpoint's
    statements write theirs themselves (oauth2/sessions), from `row`, and `emit` them."""
    event = row(action, **fields)
    db.session.add(AuditEvent(**event))
    emit(event)
