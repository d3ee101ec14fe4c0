"""Request bodies are read whole before the app runs, outside the worker's slots (api/body.py,
token_service/slots.py): a complete body reaches the app from memory; one cut short never
reaches it; a request runs only in a free slot, and a body that is still arriving holds none."""

from __future__ import annotations

import io
import json
import threading

import pytest

from token_service.api.body import BufferedBody
from token_service.slots import Slots


def _call(middleware, environ) -> tuple[str, bytes]:
    statuses = []
    body = b"".join(middleware(environ, lambda status, headers: statuses.append(status)))
    return statuses[0], body


def _echo(environ, start_response):
    start_response("200 OK", [])
    return [environ["wsgi.input"].read()]


class _Stream:
    """A client's body as the server hands it over: reads that may block until bytes arrive."""

    def __init__(self, data: bytes, until: threading.Event | None = None) -> None:
        self.data, self.until, self.reads = data, until, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.until is not None:
            self.until.wait(10)
        return self.data[:size]


def test_a_whole_body_reaches_the_app_from_memory():
    environ = {"wsgi.input": _Stream(b"grant_type=client_credentials"), "CONTENT_LENGTH": "29"}
    status, body = _call(BufferedBody(_echo, 1024, Slots(1)), environ)
    assert (status, body) == ("200 OK", b"grant_type=client_credentials")
    assert isinstance(environ["wsgi.input"], io.BytesIO)


def test_a_body_cut_short_gets_400_and_never_reaches_the_app():
    environ = {"wsgi.input": _Stream(b"grant_type="), "CONTENT_LENGTH": "100"}  # the client left

    def app(environ, start_response):
        raise AssertionError("the app must not run")

    status, body = _call(BufferedBody(app, 1024, Slots(1)), environ)
    assert status == "400 Bad Request"
    assert json.loads(body)["error"] == "invalid_request"


def test_a_chunked_body_is_read_to_its_end():
    environ = {"wsgi.input": _Stream(b"token=abc"), "HTTP_TRANSFER_ENCODING": "chunked"}
    assert _call(BufferedBody(_echo, 1024, Slots(1)), environ) == ("200 OK", b"token=abc")


def test_no_body_or_over_the_limit_the_body_is_left_to_the_app():
    stream = _Stream(b"x" * 2048)
    BufferedBody(lambda e, s: [], 1024, Slots(1))({"wsgi.input": stream}, None)  # a GET
    environ = {"wsgi.input": stream, "CONTENT_LENGTH": "2048"}
    BufferedBody(lambda e, s: [], 1024, Slots(1))(environ, None)
    assert environ["wsgi.input"] is stream and stream.reads == 0  # refused by its length


def test_a_body_still_arriving_holds_no_slot_and_the_slots_bound_the_app():
    """One slot: a client whose body has not arrived waits outside it while another request
    runs; two requests with their bodies never run the app at once."""
    running, most, lock = [0], [0], threading.Lock()
    entered = threading.Event()

    def app(environ, start_response):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        entered.set()
        threading.Event().wait(0.05)
        with lock:
            running[0] -= 1
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    middleware = BufferedBody(app, 1024, Slots(1))
    arrived = threading.Event()
    slow = {"wsgi.input": _Stream(b"late", until=arrived), "CONTENT_LENGTH": "4"}
    answers = {}
    stalled = threading.Thread(target=lambda: answers.update(slow=_call(middleware, slow)))
    stalled.start()
    quick = [{"wsgi.input": _Stream(b"now"), "CONTENT_LENGTH": "3"} for _ in range(3)]
    threads = [threading.Thread(target=_call, args=(middleware, e)) for e in quick]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert entered.is_set() and not arrived.is_set()  # served while the slow body waits
    arrived.set()
    stalled.join(10)
    assert answers["slow"] == ("200 OK", b"late")
    assert most[0] == 1


def test_an_app_that_raises_frees_its_slot():
    """One slot: a request whose app raises gives its slot back, and the next one runs (were it
    kept, the next request would wait for ever: the thread below would not end)."""

    def failing(environ, start_response):
        raise RuntimeError("the view failed")

    gate = Slots(1)
    environ = {"wsgi.input": _Stream(b"x"), "CONTENT_LENGTH": "1"}
    with pytest.raises(RuntimeError):
        BufferedBody(failing, 1024, gate)(environ, None)
    answered = []
    again = {"wsgi.input": _Stream(b"ok"), "CONTENT_LENGTH": "2"}
    worker = threading.Thread(
        daemon=True, target=lambda: answered.append(_call(BufferedBody(_echo, 1024, gate), again))
    )
    worker.start()
    worker.join(10)
    assert answered == [("200 OK", b"ok")]
