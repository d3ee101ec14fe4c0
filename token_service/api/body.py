"""Request bodies read whole, under a read timeout, before any view runs (issue 15, defect 6).

A client that announces a body and then stalls would otherwise hold the thread that reads it
for as long as it likes: gunicorn bounds the wait for a request's head, not for its body. Here
every read from the client's socket may wait `timeout` seconds at most; a body that stalls for
longer gets 408 and the connection is closed. The app then reads the body from memory, so that
no view ever waits on the network. Bounded by `max_bytes`: a longer body is not read here, and
the app refuses it by its length as before. Outside gunicorn (tests, other servers) there is
no socket to bound and requests pass untouched: a deployment puts a buffering proxy in front
anyway (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket

log = logging.getLogger(__name__)

_TIMED_OUT = json.dumps(
    {"error": "invalid_request", "error_description": "The request body arrived too slowly."}
).encode()


class BufferedBody:
    """WSGI middleware: the request body read into memory, each socket read bounded."""

    def __init__(self, inner, max_bytes: int, timeout: float) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.timeout = timeout

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1  # the app answers a malformed length
        chunked = length < 0 and environ.get("wsgi.input_terminated")
        if sock is None or not (0 < length <= self.max_bytes or chunked):
            return self.inner(environ, start_response)
        previous = sock.gettimeout()  # gunicorn's: blocking, or our worker's bound
        try:
            sock.settimeout(self.timeout)
            body = environ["wsgi.input"].read(length if length > 0 else self.max_bytes + 1)
        except (TimeoutError, OSError):
            return self._timed_out(sock, environ, start_response)
        finally:
            sock.settimeout(previous)
        environ["wsgi.input"] = io.BytesIO(body)
        if length > 0 and len(body) < length:
            return self._timed_out(sock, environ, start_response)  # the client hung up
        return self.inner(environ, start_response)

    @staticmethod
    def _timed_out(sock, environ, start_response):
        log.warning("request body too slow: 408 to %s", environ.get("REMOTE_ADDR"))
        with contextlib.suppress(OSError):  # whatever else arrives is not read: the end
            sock.shutdown(socket.SHUT_RD)
        start_response(
            "408 Request Timeout",
            [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                ("Content-Length", str(len(_TIMED_OUT))),
            ],
        )
        return [_TIMED_OUT]
