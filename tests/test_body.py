"""Request bodies are read whole before the app runs, each read bounded (api/body.py): a stalled
body gets 408 and never reaches a view; a complete one reaches it from memory."""

from __future__ import annotations

import io
import json
import socket

import pytest

from token_service.api.body import BufferedBody


@pytest.fixture
def connection():
    """The server's end of a client connection (as gunicorn hands it over) and the client's."""
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def _call(middleware, environ) -> tuple[str, bytes]:
    statuses = []
    body = b"".join(middleware(environ, lambda status, headers: statuses.append(status)))
    return statuses[0], body


def _echo(environ, start_response):
    start_response("200 OK", [])
    return [environ["wsgi.input"].read()]


def test_a_whole_body_reaches_the_app_from_memory(connection):
    server, client = connection
    client.sendall(b"grant_type=client_credentials")
    environ = {
        "gunicorn.socket": server,
        "wsgi.input": server.makefile("rb"),
        "CONTENT_LENGTH": "29",
    }
    status, body = _call(BufferedBody(_echo, 1024, timeout=30), environ)
    assert (status, body) == ("200 OK", b"grant_type=client_credentials")
    assert isinstance(environ["wsgi.input"], io.BytesIO)
    assert server.gettimeout() is None  # as it was: blocking


def test_a_stalled_body_gets_408_and_never_reaches_the_app(connection):
    server, client = connection
    client.sendall(b"grant_type=")  # 11 of the 100 bytes announced, then nothing
    environ = {"gunicorn.socket": server, "wsgi.input": server.makefile("rb")}
    environ["CONTENT_LENGTH"] = "100"

    def app(environ, start_response):
        raise AssertionError("the app must not run")

    status, body = _call(BufferedBody(app, 1024, timeout=0.2), environ)
    assert status == "408 Request Timeout"
    assert json.loads(body)["error"] == "invalid_request"


def test_a_chunked_body_is_read_to_its_end(connection):
    server, client = connection
    client.sendall(b"token=abc")
    client.shutdown(socket.SHUT_WR)  # the server's reader ends the stream (input_terminated)
    environ = {
        "gunicorn.socket": server,
        "wsgi.input": server.makefile("rb"),
        "wsgi.input_terminated": True,
    }
    assert _call(BufferedBody(_echo, 1024, timeout=30), environ) == ("200 OK", b"token=abc")


def test_without_a_socket_or_over_the_limit_the_body_is_left_to_the_app():
    original = io.BytesIO(b"x" * 10)
    environ = {"wsgi.input": original, "CONTENT_LENGTH": "10"}
    assert _call(BufferedBody(_echo, 1024, timeout=30), environ)[1] == b"x" * 10
    assert environ["wsgi.input"] is original
    server, client = socket.socketpair()
    with server, client:
        environ = {"gunicorn.socket": server, "wsgi.input": original, "CONTENT_LENGTH": "2048"}
        BufferedBody(lambda e, s: [], 1024, timeout=30)(environ, None)
        assert environ["wsgi.input"] is original  # refused by its length, never read
