"""`token-service serve` (token_service/serve.py) reads the service's settings before it starts
any worker: a bad one stops it at once with one clear line, not a crash loop of workers. So does
a port another server holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def serve(tmp_path, **settings: str) -> subprocess.CompletedProcess:
    """`python -m token_service.serve` on a fresh SQLite file with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_SERVICE_")}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TOKEN_SERVICE_KEYS_DIR": str(tmp_path / "keys"),
        "PORT": "8000",  # never bound: the server stops before
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", "token_service.serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TOKEN_SERVICE_THREADS", "abc", "TOKEN_SERVICE_THREADS must be an integer, got 'abc'"),
        ("PORT", "x", "PORT must be an integer, got 'x'"),
        ("WEB_CONCURRENCY", "two", "WEB_CONCURRENCY must be an integer >= 1, got 'two'"),
        ("WEB_CONCURRENCY", "٣", "WEB_CONCURRENCY must be an integer >= 1, got '٣'"),
    ],
)
def test_a_bad_setting_stops_the_server_before_it_starts(tmp_path, name, value, says):
    done = serve(tmp_path, **{name: value})
    assert done.returncode == 1
    assert done.stderr.strip() == f"token-service serve: {says}"


def test_a_taken_port_stops_the_server_before_it_starts(tmp_path):
    """granian binds with SO_REUSEPORT: without this check a second server would share the
    port with the first, unseen."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as granian binds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(tmp_path, PORT=str(port))
    says = f"127.0.0.1:{port} is in use (another server?)"
    assert done.returncode == 1
    assert done.stderr.strip() == f"token-service serve: {says}"
