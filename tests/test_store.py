"""The in-process store of the embedded default: same answers as Redis, bounded memory."""

from __future__ import annotations

import pytest

from token_service import store as store_module
from token_service.expiring import ExpiringMap
from token_service.store import MemoryStore


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: now[0])
    return now


def test_expired_entries_are_forgotten_as_they_expire(clock):
    """Grace responses (one per refresh, a few KB, 11 s) must not pile up: a worker that
    served 100,000 refreshes holds only the last few seconds' worth."""
    store = MemoryStore()
    for i in range(1000):
        store.set(f"grace:{i}", b"x" * 2000, 11)
        clock[0] += 0.01  # 100 per second
    live = len(store._data)
    assert live == 1000  # 10 s of writes, none expired yet
    clock[0] += 5
    store.set("grace:new", b"x", 11)
    assert 590 < len(store._data) <= 601  # the first 4 s of writes are gone
    clock[0] += 12
    store.set("other", b"x", 11)
    assert set(store._data) == {"other"}
    assert len(store._expiries) == 1


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
