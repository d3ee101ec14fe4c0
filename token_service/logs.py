"""Logs: one line per request, and every other line in the same form (structlog).

JSON in production (one object per line, on stderr), aligned text at a terminal
(`TOKEN_SERVICE_LOG_FORMAT`). Every line logged while a request runs carries its `request_id`:
the caller's `X-Request-Id` if it is a plausible id, else a new one; it is returned in the
response's `X-Request-Id`. The request's own line (`"event": "request"`) says `method`, `route`
(the rule, never the raw path), `status`, `duration_ms`, `grant_type`, `error` (the OAuth or
API error code), `client_id` (authenticated), `customer` (the first 16 hex digits of the
SHA-256 of the customer id: lines can be followed per customer, no id is written) and
`legal_entity_id`.

No token, code, password or secret reaches a line. The request line is built field by field
from values the service chose, never from a body, header or parameter. Every other line
(warnings, errors and their tracebacks, which may quote anything) is scrubbed before it is
written: the values of the request's secret parameters and its Authorization credentials, and
anything shaped like a JWT or an Authorization header, become "[redacted]". Tracebacks are
plain text, without local variables.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from urllib.parse import unquote_plus

import orjson
import structlog

#: Parameters (form or JSON members) whose values never appear in a log line.
SECRET_NAMES = frozenset(
    {
        "password",
        "new_password",
        "client_secret",
        "secret",
        "refresh_token",
        "access_token",
        "token",
        "code",
        "code_verifier",
        "client_assertion",
        "assertion",
        "id_token_hint",
    }
)
REDACTED = "[redacted]"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{8,128}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_REQUEST_LOGGER_NAME = "token_service.request"
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.ERROR: "error"}


class RequestLog:
    """What the request's log line will say, filled in by whoever learns it."""

    __slots__ = (
        "_secrets",
        "authorization",
        "client_id",
        "customer_hash",
        "error",
        "flask_request",
        "grant_type",
        "id_from_caller",
        "legal_entity_id",
        "method",
        "oauth",
        "request_id",
        "route",
    )

    def __init__(self, request_id: str, method: str, id_from_caller: bool = False) -> None:
        self.request_id = request_id
        self.id_from_caller = id_from_caller
        self.method = method
        self.route: str | None = None
        self.grant_type: str | None = None
        self.error: str | None = None
        self.client_id: str | None = None
        self.customer_hash: str | None = None
        self.legal_entity_id: str | None = None
        self.oauth = None  # the TokenRequest of an OAuth POST (oauth2.request)
        self.flask_request = None  # the Flask request, for a view's body and headers
        self._secrets: list[str] | None = None

    def customer(self, customer_id: str, legal_entity_id: str | None) -> None:
        """Name the customer the request acted for (hashed) and their legal entity."""
        self.customer_hash = customer_hash(customer_id)
        if legal_entity_id is not None:
            self.legal_entity_id = legal_entity_id

    def authenticated_client(self) -> str | None:
        client = getattr(self.oauth, "client", None)
        return client.client_id if client is not None else self.client_id

    def secrets(self) -> list[str]:
        """The request's secret values, longest first (so that none is left half-replaced)."""
        if self._secrets is None:
            found: list[str] = []
            sources = [getattr(self.oauth, "params", None) or {}]
            for params in sources + _flask_bodies(self.flask_request):
                found += [str(params[k]) for k in SECRET_NAMES & params.keys() if params[k]]
            headers = getattr(self.flask_request, "headers", None)
            for authorization in (
                getattr(self.oauth, "authorization", None),
                headers.get("Authorization") if headers is not None else None,
            ):
                if authorization:
                    found += _credentials(authorization)
            secrets = sorted(set(found), key=len, reverse=True)
            if self.flask_request is not None:  # a view may read more of its body later
                return secrets
            self._secrets = secrets
        return self._secrets


def _flask_bodies(request) -> list[dict]:
    """A Flask request's form (if a view parsed it) and JSON members: the body is not read
    here, a view may still want the raw stream."""
    if request is None:
        return []
    bodies = []
    form = request.__dict__.get("form")  # werkzeug's cached property, once parsed
    if form:
        bodies.append(form.to_dict())
    data = request.__dict__.get("_cached_data")  # a JSON body, kept by api/observe.py
    if data and request.is_json:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            bodies.append(body)
    return bodies


def _credentials(authorization: str) -> list[str]:
    """The secret parts of an Authorization header: its credentials and, for Basic, the
    decoded secret (RFC 6749 §2.3.1 form-encodes it)."""
    _, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    found = [credentials] if credentials else []
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return found
    secret = decoded.partition(":")[2]
    return found + [s for s in {secret, unquote_plus(secret)} if s]


#: Outside any request (start-up, CLI, a test calling the front directly): writes to it are
#: dropped, and nothing is scrubbed against it.
_NO_REQUEST = RequestLog("-", "-")
_current: ContextVar[RequestLog] = ContextVar("token_service_request_log", default=_NO_REQUEST)


def current() -> RequestLog:
    """The running request's log record (a throwaway one outside a request)."""
    return _current.get()


def begin(request_id_header: str | None, method: str):
    """Start a request's record; returns (record, token for `end`)."""
    if request_id_header is not None and REQUEST_ID.fullmatch(request_id_header):
        record = RequestLog(request_id_header, method, id_from_caller=True)
    else:
        record = RequestLog(os.urandom(16).hex(), method)
    return record, _current.set(record)


def end(token) -> None:
    _current.reset(token)


def customer_hash(customer_id: str) -> str:
    """How a customer appears in logs: `printf %s cus_… | sha256sum | cut -c1-16` finds them."""
    return hashlib.sha256(customer_id.encode()).hexdigest()[:16]


# -- the request line --------------------------------------------------------------------------


def request_line(record: RequestLog, status: int, seconds: float, quiet: bool = False) -> None:
    """Write the request's line; `quiet` (health probes, scrapes) logs successes at DEBUG only."""
    level = logging.ERROR if status >= 500 else logging.INFO
    if quiet and status < 400:
        level = logging.DEBUG
    if level < _state["level"]:
        return
    request_id = record.request_id
    if record.id_from_caller and any(secret in request_id for secret in record.secrets()):
        request_id = REDACTED  # the caller chose the id: never one of its own secrets
    fields = {
        "request_id": request_id,
        "method": record.method,
        "route": record.route,
        "status": status,
        "duration_ms": int(seconds * 1_000_000) / 1000,
    }
    for name in ("grant_type", "error", "legal_entity_id"):
        value = getattr(record, name)
        if value is not None:
            fields[name] = value
    client_id = record.authenticated_client()
    if client_id is not None:
        fields["client_id"] = client_id
    if record.customer_hash is not None:
        fields["customer"] = record.customer_hash
    if _state["json_stream"] is None:
        _state["request_logger"].log(level, "request", **fields)
        return
    _write_json(_REQUEST_LOGGER_NAME, level, "request", fields)


def service_line(logger: str, text: str) -> None:
    """An INFO line whose text the service wrote from its own fields (an audit event), scrubbed
    of the request's secrets like every other line, on the request line's fast path in JSON."""
    if _state["level"] > logging.INFO:
        return
    record = _current.get()
    text = scrub(text, record.secrets() if record is not _NO_REQUEST else [])
    if _state["json_stream"] is None:
        logging.getLogger(logger).info("%s", text)
        return
    fields = {} if record is _NO_REQUEST else {"request_id": record.request_id}
    _write_json(logger, logging.INFO, text, fields)


def _write_json(logger: str, level: int, event: str, fields: dict) -> None:
    # Rendered here, as structlog's JSON renderer would, in a fifth of the time of its processor
    # chain: these lines are written on every request of the hot paths.
    line = {
        "ts": _timestamp(),
        "level": _LEVEL_NAMES[level],
        "event": event,
        "logger": logger,
        "pid": os.getpid(),
        **fields,
    }
    stream = _state["json_stream"]
    stream.write(orjson.dumps(line).decode() + "\n")
    stream.flush()


# -- processors --------------------------------------------------------------------------------


_second = [-1, ""]


def _timestamp() -> str:
    """Now in ISO 8601 UTC with milliseconds; the date and time part is formatted once a second."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return "%s.%03dZ" % (_second[1], (now - second) * 1000)  # noqa: UP031 - twice as fast


def _add_timestamp(_, __, event_dict: dict) -> dict:
    event_dict["ts"] = _timestamp()
    return event_dict


def _add_pid(_, __, event_dict: dict) -> dict:
    event_dict["pid"] = os.getpid()
    return event_dict


def _add_request_id(_, __, event_dict: dict) -> dict:
    record = _current.get()
    if record is not _NO_REQUEST:
        event_dict.setdefault("request_id", record.request_id)
    return event_dict


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with the given secrets, JWTs and Authorization credentials redacted."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered:
        text = _CREDENTIALS.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return text


def _scrub_secrets(_, __, event_dict: dict) -> dict:
    record = _current.get()
    secrets = record.secrets() if record is not _NO_REQUEST else []
    for key, value in event_dict.items():
        if key.startswith("_") or value is None or isinstance(value, bool | int | float):
            continue
        event_dict[key] = scrub(value if isinstance(value, str) else str(value), secrets)
    return event_dict


def _serialize(event_dict: dict, **_) -> str:
    return orjson.dumps(event_dict, default=str).decode()


class _Stderr:
    """sys.stderr as it is at each write (test runners and daemons replace it)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_HANDLER_MARK = "_token_service_handler"
_state: dict = {"level": logging.INFO, "request_logger": None, "json_stream": None}


def configure(log_format: str = "json", level: str = "INFO", stream=None) -> None:
    """Send every log line (structlog's and the standard library's) through one pipeline to
    `stream` (stderr by default): JSON lines or console text. Safe to call again."""
    stream = stream if stream is not None else _Stderr()
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(
            colors=getattr(sys.stderr, "isatty", lambda: False)(),
            exception_formatter=structlog.dev.plain_traceback,  # never show local variables
            timestamp_key="ts",
        )
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_serialize)
    numeric_level = logging.getLevelNamesMapping()[level]

    # The request line: fields the service chose, nothing to scrub (see request_line).
    request_processors = [structlog.processors.add_log_level, _add_timestamp, _add_pid, renderer]
    _state["request_logger"] = structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=request_processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
    ).bind(logger=_REQUEST_LOGGER_NAME)
    _state["json_stream"] = stream if log_format == "json" else None
    _state["level"] = numeric_level

    # Everything else: the standard library's records (the service logs through `logging`),
    # and structlog's own loggers, should a library use them. Tracebacks are rendered as plain
    # text and scrubbed like the rest of the line.
    stamped = [structlog.processors.add_log_level, _add_timestamp, _add_pid, _add_request_id]
    cleaned = [structlog.processors.format_exc_info, _scrub_secrets]
    structlog.configure(
        processors=[*stamped, *cleaned, renderer],
        logger_factory=structlog.WriteLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*stamped, structlog.stdlib.add_logger_name],
            processors=[
                *cleaned,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
