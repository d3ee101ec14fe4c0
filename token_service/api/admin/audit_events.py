"""/admin/audit-events: who did what to whom, newest first."""

from __future__ import annotations

from sqlalchemy import select

from ...models import AuditEvent
from . import representations as rep
from .query import Param, arg, arg_datetime, page
from .routing import operation

TAG = "Audit events"
_TEXT = {"type": "string", "maxLength": 255}
_TIME = {"type": "string", "format": "date-time"}


@operation(
    "GET",
    "/audit-events",
    summary="List audit events",
    tag=TAG,
    query=(
        Param("actor_id", _TEXT, "A client id or customer id that acted."),
        Param("customer_id", _TEXT, "The customer concerned."),
        Param("action", _TEXT, "e.g. customer.blocked, login.failed."),
        Param("target", _TEXT),
        Param("since", _TIME, "At or after (RFC 3339; no zone: UTC)."),
        Param("until", _TIME, "Before (RFC 3339; no zone: UTC)."),
    ),
    paginated=True,
    responses={200: rep.page_of(rep.AuditEvent)},
)
def list_audit_events():
    """Newest first."""
    query = select(AuditEvent)
    for name in ("actor_id", "customer_id", "action", "target"):
        value = arg(name)
        if value is not None:
            query = query.where(getattr(AuditEvent, name) == value)
    since, until = arg_datetime("since"), arg_datetime("until")
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    return page(query, [(AuditEvent.id, True)], rep.audit_event)
