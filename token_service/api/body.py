"""Request bodies read whole before the app runs, outside the worker's slots (issue 15, defect 6).

A client that announces a body and then sends it slowly, or never, keeps the thread that reads
it waiting: the server bounds the wait for a request's head (`TOKEN_SERVICE_READ_TIMEOUT`,
token_service/serve.py), not for its body. So the body is read here, before the request takes
one of the slots that run the app (token_service/slots.py): a stalled client holds one of the
server's waiting threads, which cost no CPU and are many, never a slot, and the other requests
go on being served. The app then reads the body from memory, so that no view ever waits on the
network. Bounded by `max_bytes`: a longer body is not read here, and the app refuses it by its
length as before. A deployment still puts a buffering proxy in front (docs/operations.md),
which also bounds the time a body may take.
"""

from __future__ import annotations

import io
import json
import logging

from ..inputs import ascii_int
from ..slots import Slots

log = logging.getLogger(__name__)

_CUT_SHORT = json.dumps(
    {"error": "invalid_request", "error_description": "The request body ended early."}
).encode()


class BufferedBody:
    """WSGI middleware: the request body read into memory, then the app run in a slot."""

    def __init__(self, inner, max_bytes: int, slots: Slots) -> None:
        self.inner = inner
        self.max_bytes = max_bytes
        self.slots = slots

    def __call__(self, environ, start_response):
        # A malformed length reads as none here: the app answers it.
        length = ascii_int(environ.get("CONTENT_LENGTH") or "0", 19) or 0
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if 0 < length <= self.max_bytes or (chunked and length == 0):
            body = environ["wsgi.input"].read(length or self.max_bytes + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            if len(body) < length:  # the client hung up mid-body
                return self._cut_short(environ, start_response)
        self.slots.enter()
        try:
            return self.inner(environ, start_response)
        finally:
            self.slots.leave()

    @staticmethod
    def _cut_short(environ, start_response):
        log.warning("request body ended early: 400 to %s", environ.get("REMOTE_ADDR"))
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
                ("Content-Length", str(len(_CUT_SHORT))),
            ],
        )
        return [_CUT_SHORT]
