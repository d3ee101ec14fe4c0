"""A slow client cannot hold the service (issue 15, defect 6), under `token-service serve` as
deployed: a real gunicorn with the chosen worker model, on the test's backend.

Two clients stall, as many as the worker has threads: one halfway through its request head,
one halfway through its body. Requests from others are still answered; once the read timeout
passes the stalled body gets 408 and both connections are closed; and the worker that served
them is the one still serving (no restart, so nothing in memory is lost).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import basic_auth

ROOT = Path(__file__).resolve().parent.parent
SLOW_HEAD = b"POST /oauth/token HTTP/1.1\r\nHost: test\r\nContent-Type: applica"
SLOW_BODY = (
    b"POST /oauth/token HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    b"grant_type=client_credentials"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(app, tmp_path):
    """`token-service serve` with one worker of two threads, on the app's database and store."""
    settings = app.config["SETTINGS"]
    port = _free_port()
    env = dict(os.environ) | {
        "PORT": str(port),
        "DATABASE_URL": settings.database_url,
        "TOKEN_SERVICE_KEYS_DIR": str(settings.keys_dir),
        "TOKEN_SERVICE_ISSUER": settings.issuer,
        "TOKEN_SERVICE_READ_TIMEOUT": "2",
        "TOKEN_SERVICE_THREADS": "2",
        "WEB_CONCURRENCY": "1",
    }
    env.pop("REDIS_URL", None)
    if settings.redis_url:
        env |= {
            "REDIS_URL": settings.redis_url,
            "TOKEN_SERVICE_REDIS_PREFIX": app.extensions["token_store"].prefix,
        }
    log = (tmp_path / "serve.log").open("w")
    command = [str(Path(sys.executable).parent / "token-service"), "serve"]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.terminate()
        pytest.fail((tmp_path / "serve.log").read_text())
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def _worker_pids(proc) -> list[int]:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def test_stalled_bodies_hold_no_worker(app, served):
    url, proc = served
    workers = _worker_pids(proc)
    stalled = []
    # One per thread: half a head; a head and 29 of the 100 bytes of body announced.
    for start in (SLOW_HEAD, SLOW_BODY):
        conn = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        conn.sendall(start)
        stalled.append(conn)

    headers = basic_auth("admin-cli", app.secrets["admin-cli"])
    request = urllib.request.Request(
        f"{url}/oauth/token", data=b"grant_type=client_credentials", headers=headers
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200

    replies = []
    for conn in stalled:
        conn.settimeout(60)
        reply = b""
        while chunk := conn.recv(4096):  # until the service closes the connection
            reply += chunk
        conn.close()
        replies.append(reply)
    assert replies[0] == b""  # half a head: closed, nothing to answer
    assert replies[1].startswith(b"HTTP/1.1 408 "), replies[1][:100]
    assert b'"error":"invalid_request"' in replies[1].replace(b" ", b"")
    assert _worker_pids(proc) == workers  # the same worker: nothing restarted
