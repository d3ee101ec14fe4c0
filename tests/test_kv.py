"""The key-value store's backends of the embedded default and of tools (token_service/kv): same
answers as Redis, bounded memory; the store file outlives its process and is shared by threads
and processes."""

from __future__ import annotations

import itertools
import sqlite3
import sys
import threading
from contextlib import closing

import pytest

from token_service.expiring import ExpiringMap
from token_service.kv import MemoryStore, SqliteStore, embedded_store_path
from token_service.kv import memory as memory_module
from token_service.kv import sqlite as sqlite_module


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(memory_module.time, "monotonic", lambda: now[0])
    return now


def test_expired_entries_are_forgotten_as_they_expire(clock):
    """Grace responses (one per refresh, a few KB, 11 s) must not pile up: a worker that
    served 100,000 refreshes holds only the last few seconds' worth."""
    store = MemoryStore()
    for i in range(1000):
        store.set(f"grace:{i}", b"x" * 2000, 11)
        clock[0] += 0.01  # 100 per second
    live = len(store.held())
    assert live == 1000  # 10 s of writes, none expired yet
    clock[0] += 5
    store.set("grace:new", b"x", 11)
    assert 590 < len(store.held()) <= 601  # the first 4 s of writes are gone
    clock[0] += 12
    store.set("other", b"x", 11)
    assert set(store.held()) == {"other"}
    assert store.queued() == 1


def test_overwritten_and_counted_keys_keep_their_latest_expiry(clock):
    store = MemoryStore()
    store.set("k", b"1", 5)
    store.set("k", b"2", 60)  # a longer life: the first expiry must not delete it
    clock[0] += 10
    store.set("tick", b"", 1)
    assert store.get("k") == b"2"
    assert store.incr("n", 30) == 1
    clock[0] += 20
    assert store.incr("n", 30) == 2  # the counter keeps its first expiry...
    clock[0] += 11
    store.set("tick", b"", 1)
    assert store.get("n") is None  # ...and goes with it
    assert store.ttl("k") == 19


def test_expiring_map_forgets_expired_entries_and_stays_bounded():
    now = [100.0]
    cache = ExpiringMap(maxsize=3, ttl=5, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", None)  # a cached "nothing" is an answer too
    cache.put("c", 3, expires_at=101.0)
    assert cache.get("b", "missing") is None and "b" in cache
    now[0] = 101.0
    assert cache.get("c", "missing") == "missing"  # expired at 101
    cache.put("d", 4)  # room again
    now[0] = 105.5
    cache.put("e", 5)  # full of live entries after "a" and "b" expired: those go
    assert cache.get("a") is None and "a" not in cache
    assert cache.get("d") == 4 and cache.get("e") == 5
    cache.put("f", 6)
    cache.put("g", 7)  # full and nothing expired: everything goes, "g" stays
    assert len(cache) == 1 and cache.get("g") == 7


@pytest.fixture
def wall_clock(monkeypatch):
    now = [1_800_000_000.0]
    monkeypatch.setattr(sqlite_module.time, "time", lambda: now[0])
    return now


def test_the_sqlite_store_answers_as_redis_does(tmp_path, wall_clock):
    store = SqliteStore(tmp_path / "x.store.sqlite3")
    store.set("k", b"1", 5)
    store.set("k", b"2", 60)
    assert store.get_many(["k", "missing"]) == [b"2", None]
    assert store.incr("n", 30) == 1
    wall_clock[0] += 20
    assert store.incr("n", 30) == 2  # the counter keeps its first expiry...
    assert store.get("n") == b"2"
    wall_clock[0] += 11
    assert store.get("n") is None  # ...and goes with it
    assert store.incr("n", 30) == 1  # and starts again
    assert store.ttl("k") == 29 and store.ttl("missing") == -2
    store.delete("k")
    assert store.get("k") is None
    store.set_and_publish("deny:jti:x", b"1", 10, "channel", "{}")
    assert store.get("deny:jti:x") == b"1" and store.published[-1] == ("channel", "{}")
    assert store.subscribe("channel") is None and store.ping()


def test_the_sqlite_store_outlives_its_process_and_forgets_what_expired(tmp_path, wall_clock):
    path = tmp_path / "x.store.sqlite3"
    first = SqliteStore(path)
    first.set("deny:jti:a", b"1", 300)
    first.set("grace:b", b"x", 11)
    assert first.incr("throttle:acct:c", 86400) == 1
    again = SqliteStore(path)  # a restarted worker, or another one on this host
    assert again.get_many(["deny:jti:a", "grace:b"]) == [b"1", b"x"]
    assert again.incr("throttle:acct:c", 86400) == 2
    wall_clock[0] += SqliteStore.SWEEP_SECONDS + 12
    again.set("tick", b"", 1)  # a write sweeps what has expired
    with closing(sqlite3.connect(path)) as file:  # the file, read as another process would
        rows = file.execute("SELECT key FROM store_entries ORDER BY key").fetchall()
    assert [key for (key,) in rows] == ["deny:jti:a", "throttle:acct:c", "tick"]


def test_the_sqlite_store_counts_every_increment_of_every_thread(tmp_path):
    store = SqliteStore(tmp_path / "x.store.sqlite3")
    threads = [
        threading.Thread(target=lambda: [store.incr("n", 60) for _ in range(50)]) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("n") == b"400"


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("sqlite:////data/ts.sqlite3", "/data/ts.store.sqlite3"),
        ("sqlite:////data/ts", "/data/ts.store.sqlite3"),
        ("sqlite:///:memory:", "/inst/token_store.sqlite3"),
        ("postgresql+psycopg://db/ts", "/inst/token_store.sqlite3"),
    ],
)
def test_the_embedded_store_lives_beside_the_database(database_url, expected):
    assert str(embedded_store_path(database_url, "/inst")) == expected


def test_expiring_map_rebuilds_while_other_threads_write():
    """Full maps rebuilt while other threads put and pop: no error, no value under another key.
    (A stress test: the RuntimeError of iterating a dict another thread pops from is rare.)"""
    ticks = itertools.count()
    cache = ExpiringMap(maxsize=64, ttl=300, clock=lambda: next(ticks))  # expiring all the time
    errors = []

    def writer(n: int) -> None:
        try:
            for i in range(5000):
                key = (n, i % 200)
                cache.put(key, key)
                value = cache.get((n, (i * 7) % 200))  # pops what expired, mid-rebuild too
                assert value is None or value == (n, (i * 7) % 200)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside a rebuild too
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
