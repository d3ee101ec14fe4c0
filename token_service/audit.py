"""Audit events: who did what to whom. Added to the caller's transaction, never committed here."""

from __future__ import annotations

import logging

from .extensions import db
from .models import AuditEvent, utcnow

log = logging.getLogger("token_service.audit")


def event(
    action: str,
    *,
    actor_type: str,
    actor_id: str | None,
    customer_id: str | None = None,
    target: str | None = None,
    legal_entity_id: str | None = None,
    **details,
) -> dict:
    """One audit event's row, logged (without secrets) as it is made. `legal_entity_id`: the
    entity the change happened in, whose company admins may read the event."""
    log.info(
        "%s actor=%s:%s customer=%s target=%s", action, actor_type, actor_id, customer_id, target
    )
    return {
        "at": utcnow(),
        "action": action,
        "actor_type": actor_type,
        "actor_id": actor_id,
        "customer_id": customer_id,
        "target": target,
        "legal_entity_id": legal_entity_id,
        "details": details,
    }


def record(action: str, **fields) -> None:
    """Add one audit event (and log it) in the current transaction."""
    db.session.add(AuditEvent(**event(action, **fields)))
