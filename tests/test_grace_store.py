"""The grace store's contract (oauth2/grace.py), held against each implementation: in memory,
the store file and Redis. No HTTP here: what the refresh grant relies on to replay the answer
of a rotation it lost (DESIGN section 4, the grace window)."""

from __future__ import annotations

import time

import pytest

from token_service.kv import RedisStore, StoreUnavailable
from token_service.oauth2 import grace
from token_service.oauth2.grace import RedisGraceStore, WrittenGraceStore

TOKEN = "presented-refresh-token"
RESPONSE = {"access_token": "a", "refresh_token": "successor", "token_type": "Bearer"}


@pytest.fixture
def grace_store(kv_store):
    return grace.for_store(kv_store)


def test_each_backend_has_its_implementation(kv_store, grace_store):
    expected = RedisGraceStore if isinstance(kv_store, RedisStore) else WrittenGraceStore
    assert type(grace_store) is expected


def test_a_kept_response_is_fetched_and_opens_only_under_its_token(grace_store, kv_store):
    key = grace.store_key(TOKEN, "successor-hash")
    params = grace.fingerprint("storefront", "acme", None)
    grace_store.keep(key, grace.seal(TOKEN, params, RESPONSE), 11).wait()
    sealed = grace_store.fetch(key, 0.5)
    assert grace.open_sealed(TOKEN, sealed) == (params, RESPONSE)
    assert grace.open_sealed("another-token", sealed) is None  # the store holds nothing usable
    assert TOKEN.encode() not in sealed and TOKEN not in key
    assert grace_store.fetch(grace.store_key(TOKEN, "another-successor"), 0.5) is None


def test_a_write_still_travelling_when_the_rotation_commits_is_found(grace_store):
    """The grant keeps the response, rotates, and only then waits for the write: a request
    that finds the token consumed in between must find the response."""
    pending = grace_store.keep("grace:k", b"sealed", 11)
    try:
        assert grace_store.fetch("grace:k", 0.0) == b"sealed"
    finally:
        pending.wait()


def test_a_response_is_forgotten_after_its_time(grace_store):
    grace_store.keep("grace:short", b"sealed", 1).wait()
    time.sleep(1.1)
    assert grace_store.fetch("grace:short", 1.1) is None


@pytest.mark.parametrize("age", [0.0, 0.9, 1.5])
def test_a_missing_response_is_asked_for_again_only_where_a_write_can_lag(
    grace_store, kv_store, monkeypatch, age
):
    """Redis: a response missing for a young rotation gets a second look (its SET may still be
    on its way); in memory and the store file the write was done before the rotation, so one
    read answers."""
    grace_store.keep("grace:late", b"sealed", 11).wait()
    real_get, calls = kv_store.get, []

    def late_get(key):
        calls.append(key)
        return None if len(calls) == 1 else real_get(key)

    monkeypatch.setattr(kv_store, "get", late_get)
    found = grace_store.fetch("grace:late", age)
    second_look = isinstance(grace_store, RedisGraceStore) and age <= 1.0
    assert len(calls) == (2 if second_look else 1)
    assert found == (b"sealed" if second_look else None)


def test_redis_down_fails_each_call_alike():
    down = grace.for_store(RedisStore("redis://127.0.0.1:1/0"))  # nothing listens on port 1
    with pytest.raises(StoreUnavailable):
        down.keep("grace:k", b"sealed", 11).wait()
    with pytest.raises(StoreUnavailable):
        down.fetch("grace:k", 5.0)
