"""Audit events: who did what to whom. Added to the caller's transaction, never committed here."""

from __future__ import annotations

import logging

from .extensions import db
from .models import AuditEvent

log = logging.getLogger("token_service.audit")


def record(
    action: str,
    *,
    actor_type: str,
    actor_id: str | None,
    customer_id: str | None = None,
    target: str | None = None,
    **details,
) -> None:
    """Add one audit event (and log it without secrets) in the current transaction."""
    db.session.add(
        AuditEvent(
            action=action,
            actor_type=actor_type,
            actor_id=actor_id,
            customer_id=customer_id,
            target=target,
            details=details,
        )
    )
    log.info(
        "%s actor=%s:%s customer=%s target=%s", action, actor_type, actor_id, customer_id, target
    )
