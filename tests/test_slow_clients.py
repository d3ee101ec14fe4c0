"""A slow client cannot hold the service (issue 15, defect 6), under `token-service serve` as
deployed: granian with the app's slots, on the test's backend.

Clients stall: two halfway through their request head, and three, more than the worker has
slots, halfway through their body. Requests from others are still answered; once the read
timeout passes the stalled heads are closed; a stalled body holds a waiting thread, not a slot,
and is answered when it finally arrives; and the worker that served them all is the one still
serving (no restart, so nothing in memory is lost).
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


def test_stalled_clients_hold_no_slot(app, served):
    url, proc = served
    workers = _worker_pids(proc)
    port = int(url.rsplit(":", 1)[1])
    heads, bodies = [], []
    for start, stalled in [(SLOW_HEAD, heads)] * 2 + [(SLOW_BODY, bodies)] * 3:
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(start)
        stalled.append(conn)

    headers = basic_auth("admin-cli", app.secrets["admin-cli"])
    for _ in range(3):
        request = urllib.request.Request(
            f"{url}/oauth/token", data=b"grant_type=client_credentials", headers=headers
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200

    for conn in heads:  # closed at the read timeout, nothing to answer
        conn.settimeout(60)
        assert conn.recv(4096) == b""
        conn.close()
    for conn in bodies:  # the rest of the body, late: answered (no client authentication)
        conn.sendall(b"&" + b"x" * 70)
        conn.settimeout(60)
        reply = conn.recv(4096)
        conn.close()
        assert reply.startswith(b"HTTP/1.1 401 "), reply[:100]
    assert _worker_pids(proc) == workers  # the same worker: nothing restarted
