"""The service as it is deployed: the `token-service` commands of the README, then `token-service
serve` (granian), on both backends. "embedded": SQLite file, no REDIS_URL, one worker. "postgres": a
throwaway PostgreSQL database + Redis, several workers (a real multi-process service)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import services
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: token-service, granian
# Read after tests/conftest.py has pointed them at servers that answer (tests/services.py).
PG_ADMIN_URL = services.postgres_url(os.environ)
REDIS_URL = services.redis_url(os.environ)
WORKERS = {"embedded": 1, "postgres": 3}
READY_TIMEOUT = 30.0
SECRET_LINE = re.compile(r"^client (\S+) secret: (\S+)$", re.MULTILINE)
# Variables of the service that the caller's environment must not leak into the subprocesses:
# the expectations are the defaults (demo data, scope bundles, lifetimes).
SERVICE_ENV = ("DATABASE_URL", "REDIS_URL", "PORT", "HOST", "FLASK_APP")


@dataclass
class Server:
    backend: str
    issuer: str
    database_url: str
    workers: int
    secrets: dict[str, str]
    log: Path  # the server's output: granian's lines and the service's JSON request lines
    process: subprocess.Popen = field(repr=False)
    redis_prefix: str = "ts:"  # of its deny-list keys, for a resource server's online check

    def served_by(self, tag: str, count: int) -> list[int]:
        """Pids of the workers that answered the requests sent with an `X-Request-Id` that
        starts with `tag`; waits up to 5 s for `count` of them (a worker logs after answering)."""
        deadline = time.monotonic() + 5
        while True:
            pids = []
            for line in self.log.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue  # granian's own lines
                record = json.loads(line)  # the request line, not other events of the request
                if record["event"] == "request" and record["request_id"].startswith(tag):
                    pids.append(record["pid"])
            if len(pids) >= count or time.monotonic() > deadline:
                return pids
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "token-service"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"token-service {' '.join(args)} exited {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done.stdout


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (main and workers), SIGKILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stray workers, if any
    process.wait(timeout=15)


def _wait_ready(process: subprocess.Popen, issuer: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited {process.returncode} at start-up:\n{_tail(log)}")
        try:
            response = requests.get(f"{issuer}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.1)
    pytest.fail(f"/readyz not ready after {READY_TIMEOUT} s (last: {last}):\n{_tail(log)}")


@pytest.fixture(scope="module")
def e2e_pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database (postgresql:// URL, as an operator would write it)."""
    name = f"ts_e2e_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql+psycopg://", "postgresql://")
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def running_server(backend: str, home: Path, database_url: str) -> Iterator[Server]:
    """migrate, keys generate, demo (secrets captured), then serve until /readyz answers."""
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SERVICE_ENV and not k.startswith("TOKEN_SERVICE_")
    }
    env.update(
        DATABASE_URL=database_url,
        TOKEN_SERVICE_KEYS_DIR=str(home / "keys"),
        TOKEN_SERVICE_ISSUER=issuer,
        PYTHONUNBUFFERED="1",
    )
    if backend == "postgres":
        env["REDIS_URL"] = REDIS_URL
        # Its own Redis keys: parallel runs share the server, and the throttle keys on the
        # demo's usernames and 127.0.0.1.
        env["TOKEN_SERVICE_REDIS_PREFIX"] = f"ts-e2e:{uuid.uuid4().hex[:8]}:"
    (home / "keys").mkdir()
    _run(["migrate"], env)
    _run(["keys", "generate"], env)
    secrets = dict(SECRET_LINE.findall(_run(["demo"], env)))
    assert {"order-service", "admin-cli"} <= secrets.keys(), secrets

    workers = WORKERS[backend]
    log = home / "server.log"
    env.update(PORT=str(port), WEB_CONCURRENCY=str(workers), TOKEN_SERVICE_LOG_FORMAT="json")
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [str(BIN / "token-service"), "serve"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    try:
        _wait_ready(process, issuer, log)
        yield Server(
            backend,
            issuer,
            database_url,
            workers,
            secrets,
            log,
            process,
            env.get("TOKEN_SERVICE_REDIS_PREFIX", "ts:"),
        )
    finally:
        _stop(process)


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    """The service under `token-service serve` on each backend."""
    backend = request.param
    home = tmp_path_factory.mktemp(f"e2e-{backend}")
    if backend == "postgres":
        database_url = request.getfixturevalue("e2e_pg_database")
    else:
        database_url = f"sqlite:///{home / 'token_service.sqlite3'}"
    with running_server(backend, home, database_url) as running:
        yield running


@pytest.hookimpl(tryfirst=True)  # before xdist's, which turns the marks into each test's group
def pytest_collection_modifyitems(items) -> None:
    """One xdist group per e2e module: its module-scoped servers start on one worker, once."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


#: Debian's chromium, as root: no sandbox, and none of its calls to Google's hosts (refused here).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium():
    """One browser per e2e module (Playwright driving Debian's chromium)."""
    from playwright import sync_api as playwright_api

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
