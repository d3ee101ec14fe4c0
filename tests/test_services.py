"""tests/services.py: throwaway PostgreSQL and Redis when none answers at the configured URLs,
started for real on free ports and stopped (issue 27, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import redis
import services

HERE = Path(__file__).resolve().parent


def _nothing_listens() -> int:
    return services.free_port()  # bound and closed again: nobody listens there now


def _stopped(server: services.Throwaway) -> None:
    server.stop()
    assert server.process.poll() is not None
    assert not server.directory.exists()


def test_throwaway_redis_starts_on_a_free_port_and_stops():
    server = services.start_redis()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("save") == {"save": ""}  # nothing written to disk
        client.close()
    finally:
        _stopped(server)
    assert services.redis_problem(server.url) is not None


def test_throwaway_postgres_starts_on_a_free_port_and_stops():
    server = services.start_postgres()
    try:
        assert server.url.endswith(f"@127.0.0.1:{server.port}/test")
        with psycopg.connect(services._libpq(server.url)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("test",)
            conn.execute("CREATE TABLE t (x int)")  # a database the suite can write in
    finally:
        _stopped(server)
    assert services.postgres_problem(server.url) is not None


def test_arrange_keeps_servers_that_answer():
    environ = {
        "TEST_POSTGRES_URL": services.postgres_url(os.environ),
        "TEST_REDIS_URL": services.redis_url(os.environ),
    }
    done = services.arrange(dict(environ))
    assert (done.started, done.lines) == ([], [])
    # A worker of a run that arranged them does nothing, not even a check.
    assert services.arrange({services.ARRANGED: "1"}).started == []


def test_arrange_starts_throwaways_where_nothing_answers():
    environ = {
        "TEST_POSTGRES_URL": f"postgresql+psycopg://postgres@127.0.0.1:{_nothing_listens()}/test",
        "TEST_REDIS_URL": f"redis://127.0.0.1:{_nothing_listens()}/0",
    }
    done = services.arrange(environ)
    try:
        assert [s.name for s in done.started] == ["PostgreSQL", "Redis"]
        assert environ["TEST_POSTGRES_URL"] == done.started[0].url
        assert environ["TEST_REDIS_URL"] == done.started[1].url
        assert services.postgres_problem(environ["TEST_POSTGRES_URL"]) is None
        assert services.redis_problem(environ["TEST_REDIS_URL"]) is None
        assert environ[services.ARRANGED] == "1"
        assert all("throwaway" in line for line in done.lines)
    finally:
        done.stop()
    assert services.postgres_problem(environ["TEST_POSTGRES_URL"]) is not None
    assert services.redis_problem(environ["TEST_REDIS_URL"]) is not None


def test_check_says_what_a_run_would_use_and_starts_nothing():
    env = {
        **os.environ,
        "TEST_POSTGRES_URL": f"postgresql+psycopg://postgres@127.0.0.1:{_nothing_listens()}/test",
        "TEST_REDIS_URL": services.redis_url(os.environ),
    }
    done = subprocess.run(
        [sys.executable, str(HERE / "services.py"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("PostgreSQL: nothing answers at ")
    assert lines[0].endswith("a throwaway one would run")
    assert lines[1].startswith("Redis: answers at ")
    assert lines[2].startswith("chromium: ")
