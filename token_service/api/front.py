"""POST /oauth/token, /oauth/introspect and /oauth/revoke, answered straight from WSGI.

They are the service's hot paths, and with one sync worker per core Flask's request machinery
(request and response objects, URL matching, signals) cost a third of an introspection (see
docs/performance.md). So `OAuthFront` sits in front of the Flask app: a POST to one of these
three paths is answered here, inside an app context like any view; every other request,
including other methods on these paths (405), goes on to Flask. The contract is the same as
everywhere else: RFC 6749 §5.2 JSON errors, a 503 for an outage of the database or the signing
key, `Cache-Control: no-store`. Token and revocation answers carry their CORS headers
(api/cors.py: `Vary: Origin` always, the origin if allowed for the request's client);
introspection's never do.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import orjson
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from sqlalchemy.exc import DBAPIError

from .. import logs, metrics
from ..extensions import db
from ..inputs import ascii_int
from ..oauth2.request import TokenRequest, parse_form
from . import cors
from .errors import JSON, NO_STORE, error_parts

log = logging.getLogger(__name__)

_NO_STORE = list(NO_STORE.items())
_STATUS = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def read_form(environ: dict, max_bytes: int) -> TokenRequest:
    """The request's form, reading never more than `max_bytes` + 1 bytes of the body."""
    raw = environ.get("CONTENT_LENGTH") or ""
    length = -1 if raw == "" else ascii_int(raw, 19)
    if length is None:
        raise InvalidRequestError("The Content-Length header is not a number.")
    if length > max_bytes:
        raise InvalidRequestError(f"The request body exceeds {max_bytes} bytes.")
    if length >= 0:
        body = environ["wsgi.input"].read(length)
    elif environ.get("wsgi.input_terminated"):  # chunked, and the server ends the stream
        body = environ["wsgi.input"].read(max_bytes + 1)
    else:  # no length and no end: nothing can be read safely
        body = b""
    return TokenRequest(
        params=parse_form(environ.get("CONTENT_TYPE"), body, max_bytes),
        authorization=environ.get("HTTP_AUTHORIZATION"),
        remote_addr=environ.get("REMOTE_ADDR"),
    )


def run_once_more_on_lost_connection(work, *args):
    """Run `work`; if the database connection turned out dead (a database restart, a failover),
    roll back and run it once more on a fresh connection. Safe: the failed attempt committed
    nothing, or, for a rotation that committed as its connection died, the retry is a replay
    that the grace window answers with the same response."""
    try:
        return work(*args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("database connection lost; retrying once on a new one")
        metrics.backend_error("database")
        db.session.rollback()
        return work(*args)


def _ended(work, *args):
    """Run `work`, then end what ORM transaction it left open: the session store commits what
    it writes, so what is left is a read (a client's row, on a cache miss)."""
    try:
        return work(*args)
    finally:
        if db.session.registry.has():  # most requests never open an ORM session
            db.session.rollback()


class OAuthFront:
    """WSGI middleware: the three OAuth POST endpoints, then the Flask app for the rest."""

    def __init__(self, app, inner) -> None:
        self.app = app
        self.inner = inner
        self.max_form_bytes = app.config["SETTINGS"].max_form_bytes
        self.routes = {
            "/oauth/token": self.token,
            "/oauth/introspect": self.introspect,
            "/oauth/revoke": self.revoke,
        }
        self.cors_paths = frozenset({"/oauth/token", "/oauth/revoke"})

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        route = self.routes.get(path)
        if route is None or environ.get("REQUEST_METHOD") != "POST":
            return self.inner(environ, start_response)
        note = logs.current()
        note.route = path
        with self.app.app_context():
            status, body, headers = self.answer(route, environ, note)
            if path in self.cors_paths:
                origin = environ.get("HTTP_ORIGIN")
                if origin is None:
                    headers.append(cors.VARY)
                else:
                    headers += _ended(cors.token_headers, origin, note.oauth)
        if status >= 400:
            note.error = body["error"]
        payload = b"" if body is None else orjson.dumps(body)
        headers.append(("Content-Length", str(len(payload))))
        start_response(_STATUS[status], headers)
        return [payload]

    def answer(
        self, route, environ, note: logs.RequestLog | None = None
    ) -> tuple[int, dict | None, list[tuple[str, str]]]:
        """(status, JSON body or None, headers) for one request; errors as the Flask app's
        handlers give them (one mapping: api/errors.py). The request's log record learns the
        request."""
        note = note or logs.current()
        try:
            note.oauth = request = read_form(environ, self.max_form_bytes)
            return route(request)
        except Exception as error:
            return error_parts(error, oauth=True)

    def token(self, request: TokenRequest):
        handle = self.app.extensions["token_endpoint"].handle
        return 200, run_once_more_on_lost_connection(_ended, handle, request), _ok()

    def introspect(self, request: TokenRequest):
        work = self.app.extensions["introspection"].introspect
        answer = run_once_more_on_lost_connection(_ended, work, request)
        if answer.get("sid"):  # an active customer token: whose, for the log line
            logs.current().customer(answer["sub"], answer.get("legal_entity_id"))
        return 200, answer, _ok()

    def revoke(self, request: TokenRequest):
        work = self.app.extensions["introspection"].revoke
        run_once_more_on_lost_connection(_ended, work, request)
        return 200, None, list(_NO_STORE)


def _ok() -> list[tuple[str, str]]:
    return [JSON, *_NO_STORE]
