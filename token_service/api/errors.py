"""JSON for every error: RFC 6749 §5.2 bodies on the OAuth endpoints, `{"error", "message"}`
elsewhere; a database or store outage is a 503, never a stack trace."""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Flask, jsonify, request
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from .. import metrics
from ..extensions import db
from ..keys import NoSigningKey

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def error_parts(error: Exception, *, oauth: bool) -> tuple[int, dict, list[tuple[str, str]]]:
    """The one mapping of an error to (status, JSON body, headers), for the WSGI front's
    endpoints and the Flask app's alike: an OAuth error as RFC 6749 §5.2 says; an outage of
    the database or the signing key a 503; anything else a 500 that shows nothing inside."""
    if isinstance(error, OAuth2Error):
        _rollback_quietly()
        return oauth_error_parts(error)
    if isinstance(error, DataError):
        # A value the database refuses (out of range, a NUL that got past inputs.py): the
        # request's fault, not an outage. Not an alarm, not a backend error.
        log.warning("database refused a value: %s", error.orig.__class__.__name__)
        _rollback_quietly()
        body = {"error": "invalid_request", _message(oauth): "A value in the request is invalid."}
        return 400, body, [JSON, *NO_STORE.items()]
    if isinstance(error, DBAPIError):
        log.error("database unavailable: %s", error.__class__.__name__)
        metrics.backend_error("database")
        _rollback_quietly()
        return unavailable_parts("The database is unavailable. Retry shortly.", oauth=oauth)
    if isinstance(error, NoSigningKey):
        log.error("%s", error)
        return unavailable_parts("No signing key is configured.", oauth=oauth)
    log.error("unexpected error", exc_info=error)
    _rollback_quietly()
    body = {"error": "server_error", _message(oauth): "Internal server error."}
    return 500, body, [JSON, *NO_STORE.items()]


def oauth_error_parts(error: OAuth2Error) -> tuple[int, dict, list[tuple[str, str]]]:
    """RFC 6749 §5.2: status, JSON body and headers (e.g. WWW-Authenticate) of an error."""
    status, body, headers = error()
    kept = [(name, value) for name, value in headers if name.lower() not in _OURS]
    return status, body, [JSON, *kept, *NO_STORE.items()]


def unavailable_parts(message: str, *, oauth: bool) -> tuple[int, dict, list[tuple[str, str]]]:
    """A 503 for an outage of the database or the signing key; clients retry after a second."""
    body = {"error": "temporarily_unavailable", _message(oauth): message}
    return 503, body, [JSON, *NO_STORE.items(), ("Retry-After", "1")]


def _message(oauth: bool) -> str:
    return "error_description" if oauth else "message"


def _rollback_quietly() -> None:
    try:
        db.session.rollback()
    except Exception:
        log.debug("rollback failed", exc_info=True)


JSON = ("Content-Type", "application/json")
_OURS = {"content-type", *(name.lower() for name in NO_STORE)}


def _is_oauth_path() -> bool:
    return request.path.startswith("/oauth/")


def render_http_errors_under(app: Flask, prefixes: tuple[str, ...], render) -> None:
    """Let a surface answer the HTTP errors of its own paths (an unknown path's 404, a 405)
    in its own shape: no blueprint's handler sees a request that matched no route."""
    app.extensions.setdefault("http_error_renderers", []).append((prefixes, render))


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        db.session.rollback()
        for prefixes, render in app.extensions.get("http_error_renderers", ()):
            if request.path.startswith(prefixes):
                return render(error)
        code = (error.name or "error").lower().replace(" ", "_")
        if _is_oauth_path():  # other methods on the OAuth endpoints (their POSTs: api/front.py)
            body = {"error": "invalid_request", "error_description": error.name}
            extra = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
            return jsonify(body), error.code, {**NO_STORE, **extra}
        return jsonify({"error": code, "message": error.description}), error.code

    @app.errorhandler(OAuth2Error)
    @app.errorhandler(DataError)
    @app.errorhandler(DBAPIError)
    @app.errorhandler(OperationalError)
    @app.errorhandler(NoSigningKey)
    def mapped(error):
        status, body, headers = error_parts(error, oauth=_is_oauth_path())
        return jsonify(body), status, headers
