"""What every service shares: the refusal it raises, finding a row, the settings, and recording
an audit event in the name of the actor it is given."""

from __future__ import annotations

from typing import TypeVar

from flask import current_app

from .. import audit
from ..extensions import db


class ServiceError(ValueError):
    """A request the directory refuses; `status` says how (404 missing, 409 conflict, 422)."""

    def __init__(self, message: str, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def settings():
    return current_app.config["SETTINGS"]


def unknown_changes(changes: dict, allowed) -> None:
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ValueError(f"unknown changes: {sorted(unknown)}")


T = TypeVar("T")


def found(model: type[T], key, message: str, *, lock: bool = False) -> T:
    """The row with this primary key (locked for update with `lock`), or a 404 saying
    `message`."""
    row = db.session.get(model, key, with_for_update=lock)
    if row is None:
        raise ServiceError(message, status=404)
    return row


def record(action: str, actor: tuple[str, str | None], **fields) -> None:
    audit.record(action, actor_type=actor[0], actor_id=actor[1], **fields)
