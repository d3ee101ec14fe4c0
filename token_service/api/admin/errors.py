"""Admin API errors: `{"error", "message", "fields"?}` with the status that says what went wrong.

400 unreadable request, 401 no or bad token (RFC 6750 `WWW-Authenticate`), 403 token not
allowed, 404 missing, 409 conflict with the current state, 412 stale `If-Match`, 422 invalid
content, 503 the store or the database is down.
"""

from __future__ import annotations

import logging
from typing import Annotated

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from ...extensions import db
from ...services.base import ServiceError

log = logging.getLogger(__name__)

CODES = {
    400: "invalid_request",
    404: "not_found",
    409: "conflict",
    412: "precondition_failed",
    422: "validation_failed",
}


class Error(BaseModel):
    """Every admin error (and every non-OAuth error)."""

    model_config = ConfigDict(extra="forbid")

    error: Annotated[str, Field(description="A machine-readable code.")]
    message: str
    fields: Annotated[
        dict[str, str],
        Field(description="What is wrong with which field (path like a.b[0])."),
    ] = None


class ApiError(Exception):
    """An answer other than success, raised anywhere below a view."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    @classmethod
    def of(cls, status: int, message: str, field: str | None = None) -> ApiError:
        """The usual error for a status, optionally blaming one field."""
        fields = {field: message} if field else None
        return cls(status, CODES.get(status, "error"), message, fields=fields)


def not_found(what: str) -> ApiError:
    return ApiError.of(404, f"{what} not found")


def error_response(error: ApiError):
    details = {"fields": error.fields} if error.fields else {}
    body = Error(error=error.error, message=error.message, **details)
    return (
        jsonify(body.model_dump(exclude_unset=True)),
        error.status,
        {"Cache-Control": "no-store", **error.headers},
    )


def register(bp: Blueprint) -> None:
    """Handlers for errors raised in admin views (the app's own handle the rest: 404, 405,
    413 and database outages keep their JSON form there)."""

    @bp.errorhandler(ApiError)
    def api_error(error: ApiError):
        db.session.rollback()
        return error_response(error)

    @bp.errorhandler(ServiceError)
    def directory_error(error: ServiceError):
        db.session.rollback()
        return error_response(ApiError.of(error.status, str(error), error.field))

    @bp.errorhandler(IntegrityError)
    def integrity_error(error: IntegrityError):
        # A concurrent request won a uniqueness or reference race that the checks before the
        # write could not see: the same answer the check would have given, a conflict.
        log.info("integrity error in admin request: %s", error.orig.__class__.__name__)
        db.session.rollback()
        return error_response(ApiError.of(409, "The change conflicts with the current data."))
