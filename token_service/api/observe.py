"""Every request, whoever answers it (api/front.py or Flask): its id, its log line, its metrics;
and GET /metrics.

`Observed` is the outermost WSGI layer of the app. It opens the request's log record
(logs.RequestLog), which the layers inside fill in as they learn things (the route, the
authenticated client, the customer, the error), and when the answer is ready it writes the
request's line and counts it. On the hot paths this costs a few microseconds: one dict of
fields rendered to JSON, one counter and one histogram bucket (see docs/performance.md).
"""

from __future__ import annotations

import hmac
import time

from flask import Flask, request

from .. import logs, metrics
from ..config import Settings
from ..keys import KeyRing

#: Probes and scrapes, every few seconds: their successes are logged at DEBUG only.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def install(app: Flask) -> None:
    """Make `Observed` the app's outermost WSGI layer, and let Flask's views inform it."""
    app.before_request(_note_flask_request)
    app.after_request(_note_flask_response)
    grant_types = app.extensions["token_endpoint"].grants
    app.wsgi_app = Observed(
        app.config["SETTINGS"], app.extensions["keyring"], grant_types, app.wsgi_app
    )


class Observed:
    """WSGI middleware: request id, log line and metrics around `inner`; /metrics itself."""

    def __init__(self, settings: Settings, keyring: KeyRing, grant_types, inner) -> None:
        self.inner = inner
        self.keyring = keyring
        self.count = settings.metrics_enabled
        # Served here unless disabled or served on a port of its own (by the server's main process).
        self.serve_metrics = settings.metrics_enabled and settings.metrics_port is None
        self.metrics_token = (settings.metrics_token or "").encode() or None
        # grant_type is a metric label: only the grants the token endpoint knows.
        self.grant_types = frozenset(grant_types)

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "")
        record, token = logs.begin(environ.get("HTTP_X_REQUEST_ID"), method)
        answer: list[str] = []

        def start(status: str, headers: list, exc_info=None):
            answer.append(status)
            headers.append(("X-Request-Id", record.request_id))
            if exc_info is None:  # as most callers do: some servers' start_response takes two
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        try:
            if environ.get("PATH_INFO") == "/metrics" and self.serve_metrics and method == "GET":
                return self.metrics(environ, start, record)
            return self.inner(environ, start)
        except BaseException:
            answer[:] = ["500"]  # Flask propagates errors only when testing
            raise
        finally:
            status = int(answer[0][:3]) if answer else 500
            self.done(record, status, time.perf_counter() - started)
            logs.end(token)

    def done(self, record: logs.RequestLog, status: int, seconds: float) -> None:
        """Count the request and write its line."""
        route = record.route
        if record.oauth is not None and route == "/oauth/token":
            grant = record.oauth.params.get("grant_type")
            record.grant_type = grant if grant in self.grant_types else "other"
        if self.count:
            metrics.request_answered(
                route or "unmatched", record.grant_type or "", status, record.error or "", seconds
            )
        logs.request_line(record, status, seconds, quiet=route in QUIET_ROUTES)

    def metrics(self, environ, start_response, record: logs.RequestLog):
        """GET /metrics: the Prometheus text format, behind the metrics token if one is set."""
        record.route = "/metrics"
        if self.metrics_token is not None:
            presented = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, credentials = presented.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self.metrics_token
            ):
                record.error = "invalid_token"
                body = b'{"error":"invalid_token","message":"A valid metrics token is required."}'
                start_response(
                    "401 Unauthorized",
                    [
                        ("Content-Type", "application/json"),
                        ("WWW-Authenticate", 'Bearer realm="metrics"'),
                        ("Content-Length", str(len(body))),
                    ],
                )
                return [body]
        content_type, body = metrics.exposition(self.keyring)
        start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Cache-Control", "no-store"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]


def _note_flask_request() -> None:
    """Before a Flask view: the matched rule (never the raw path: a metric label), and the
    request, whose secret members no line logged during it may show (logs.RequestLog)."""
    record = logs.current()
    record.route = request.url_rule.rule if request.url_rule is not None else None
    record.flask_request = request._get_current_object()
    if request.is_json:  # kept in memory, so that a line logged during the view can be scrubbed
        request.get_data(cache=True)


def _note_flask_response(response):
    """After a Flask view: the error code of a JSON error answer."""
    if response.status_code >= 400 and response.is_json:
        body = response.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            logs.current().error = body["error"][:64]
    return response
