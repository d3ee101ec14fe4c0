"""JSON for every error: RFC 6749 §5.2 bodies on the OAuth endpoints, `{"error", "message"}`
elsewhere; a database or store outage is a 503, never a stack trace."""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Flask, jsonify, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from .. import metrics
from ..extensions import db
from ..keys import NoSigningKey

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oauth_error_parts(error: OAuth2Error) -> tuple[int, dict, list[tuple[str, str]]]:
    """RFC 6749 §5.2: status, JSON body and headers (e.g. WWW-Authenticate) of an error."""
    status, body, headers = error()
    kept = [(name, value) for name, value in headers if name.lower() not in _OURS]
    return status, body, [("Content-Type", "application/json"), *kept, *NO_STORE.items()]


def unavailable_parts(message: str, *, oauth: bool) -> tuple[int, dict, list[tuple[str, str]]]:
    """A 503 for an outage of the database or the signing key; clients retry after a second."""
    field = "error_description" if oauth else "message"
    body = {"error": "temporarily_unavailable", field: message}
    headers = [("Content-Type", "application/json"), *NO_STORE.items(), ("Retry-After", "1")]
    return 503, body, headers


_OURS = {"content-type", *(name.lower() for name in NO_STORE)}


def _is_oauth_path() -> bool:
    return request.path.startswith("/oauth/")


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        db.session.rollback()
        code = (error.name or "error").lower().replace(" ", "_")
        if _is_oauth_path():  # other methods on the OAuth endpoints (their POSTs: api/front.py)
            body = {"error": "invalid_request", "error_description": error.name}
            extra = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
            return jsonify(body), error.code, {**NO_STORE, **extra}
        return jsonify({"error": code, "message": error.description}), error.code

    @app.errorhandler(DBAPIError)
    @app.errorhandler(OperationalError)
    def database_down(error):
        log.error("database unavailable: %s", error.__class__.__name__)
        metrics.backend_error("database")
        try:
            db.session.rollback()
        except Exception:
            log.debug("rollback failed", exc_info=True)
        return _unavailable("The database is unavailable. Retry shortly.")

    @app.errorhandler(NoSigningKey)
    def no_key(error):
        log.error("%s", error)
        return _unavailable("No signing key is configured.")


def _unavailable(message: str):
    status, body, headers = unavailable_parts(message, oauth=_is_oauth_path())
    return jsonify(body), status, headers
