"""Metrics as deployed (`token-service serve`, PostgreSQL + Redis, two workers, /metrics on its
own port from the server's main process): every worker's requests count, whichever process
answers the scrape, and a worker's restart loses none of them (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import BIN, REDIS_URL, REPO, SECRET_LINE, SERVICE_ENV, _free_port, _run, _stop
from .conftest import _wait_ready as wait_ready


@pytest.fixture(scope="module")
def served(e2e_pg_database, tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e-metrics")
    port, metrics_port = _free_port(), _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SERVICE_ENV and not k.startswith(("TOKEN_SERVICE_", "PROMETHEUS_"))
    }
    env.update(
        DATABASE_URL=e2e_pg_database,
        REDIS_URL=REDIS_URL,
        TOKEN_SERVICE_REDIS_PREFIX=f"ts-e2e-metrics:{uuid.uuid4().hex[:6]}:",
        TOKEN_SERVICE_KEYS_DIR=str(home / "keys"),
        TOKEN_SERVICE_ISSUER=f"http://127.0.0.1:{port}",
        TOKEN_SERVICE_METRICS_PORT=str(metrics_port),
        TOKEN_SERVICE_METRICS_DIR=str(home / "metrics"),
        TOKEN_SERVICE_LOG_FORMAT="json",
        HOST="127.0.0.1",
        PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    _run(["init"], env)
    secrets = dict(SECRET_LINE.findall(_run(["demo"], env)))
    log = home / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BIN / "token-service"), "serve", "--workers", "2"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(process, env["TOKEN_SERVICE_ISSUER"], log)
        yield env["TOKEN_SERVICE_ISSUER"], f"http://127.0.0.1:{metrics_port}", secrets, log
    finally:
        _stop(process)


def samples(metrics_url: str) -> dict[tuple, float]:
    text = requests.get(f"{metrics_url}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


ISSUED = ("token_service_tokens_issued_total", (("subject", "client"),))
ANSWERED = (
    "token_service_request_duration_seconds_count",
    (("grant_type", "client_credentials"), ("route", "/oauth/token"), ("status", "200")),
)


def _healthy(issuer: str) -> bool:
    try:
        return requests.get(f"{issuer}/healthz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def request_lines(log) -> list[dict]:
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            line = json.loads(raw)
            if line.get("event") == "request" and line.get("route") == "/oauth/token":
                lines.append(line)
    return lines


def test_every_workers_requests_are_counted_by_one_scrape(served):
    issuer, metrics_url, secrets, log = served
    assert requests.get(f"{issuer}/metrics", timeout=5).status_code == 404  # its own port only

    def token(_) -> int:  # a new connection each time: any worker may take it
        return requests.post(
            f"{issuer}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("admin-cli", secrets["admin-cli"]),
            timeout=30,
        ).status_code

    sent = 0
    # Until both workers have answered some: almost always at once, but the service answers as
    # soon as one worker is up, and on a loaded machine the other may still be importing the app.
    deadline = time.monotonic() + 90
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            assert set(pool.map(token, range(40))) == {200}
            sent += 40
            if len({line["pid"] for line in request_lines(log)}) == 2:
                break
            time.sleep(0.5)
    lines = request_lines(log)
    pids = {line["pid"] for line in lines}
    assert len(pids) == 2, pids
    assert len(lines) == sent

    # One scrape (the main process's) sums both workers: neither worker answered them all.
    counted = samples(metrics_url)
    assert counted[ISSUED] == sent
    assert counted[ANSWERED] == sent
    assert max(sum(line["pid"] == pid for line in lines) for pid in pids) < sent

    # A worker that dies takes none of its counts with it (granian starts another).
    os.kill(next(iter(pids)), signal.SIGTERM)
    deadline = time.monotonic() + 20
    while not _healthy(issuer):  # a connection the stopping worker held is closed unanswered
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert token(None) == 200
    counted = samples(metrics_url)
    assert counted[ISSUED] == sent + 1
    assert counted[ANSWERED] == sent + 1
