"""This process's copy of the deny-list (revocation.DenyList) against a real Redis: it answers
only while its subscription proves it has read every announced change."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from conftest import REDIS_URL

from token_service.kv import REVOCATION_CHANNEL, RedisStore, StoreUnavailable
from token_service.kv import redis as redis_module
from token_service.revocation import DenyList

KEYS = ["deny:jti:j1", "deny:sid:s1"]


@pytest.fixture
def store():
    store = RedisStore(REDIS_URL, prefix=f"ts-test:{uuid.uuid4().hex[:8]}:")
    yield store
    store.flush()


@pytest.fixture
def deny_list(store):
    deny_list = DenyList(store)
    yield deny_list
    deny_list.subscription.close()


def announce(store: RedisStore, kind: str, value: str, stored: bytes) -> None:
    message = json.dumps({"type": kind, "value": value, "exp": int(time.time()) + 60})
    store.set_and_publish(f"deny:{kind}:{value}", stored, 60, REVOCATION_CHANNEL, message)


def store_down(monkeypatch, store: RedisStore) -> list[list[str]]:
    """The store's reads fail from now on; returns the reads that were tried."""
    tried = []

    def down(keys):
        tried.append(keys)
        raise StoreUnavailable("down")

    monkeypatch.setattr(store, "get_many", down)
    return tried


def copied(deny_list: DenyList) -> list[bytes | None]:
    """Read KEYS until the subscription is confirmed and the copy holds them."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        values = deny_list.get_many(KEYS)
        if deny_list.subscription.live and all(k in deny_list._copy for k in KEYS):
            return values
        time.sleep(0.01)
    raise AssertionError("the subscription never became live")


def test_the_copy_answers_without_the_store(deny_list, store, monkeypatch):
    assert copied(deny_list) == [None, None]
    tried = store_down(monkeypatch, store)
    assert deny_list.get_many(KEYS) == [None, None]
    assert tried == []


def test_an_announced_change_is_read_before_the_copy_answers(deny_list, store):
    assert copied(deny_list) == [None, None]
    other = RedisStore(REDIS_URL, prefix=store.prefix)  # another worker revokes
    announce(other, "sid", "s1", b"1700000000")
    assert deny_list.get_many(KEYS) == [None, b"1700000000"]
    announce(other, "jti", "j1", b"1")
    assert deny_list.get_many(KEYS) == [b"1", b"1700000000"]


def test_a_message_it_cannot_read_drops_the_whole_copy(deny_list, store, monkeypatch):
    copied(deny_list)
    store._redis.publish(REVOCATION_CHANNEL, "not json")
    tried = store_down(monkeypatch, store)
    with pytest.raises(StoreUnavailable):
        deny_list.get_many(KEYS)
    assert tried == [KEYS]


def test_a_lost_subscription_sends_every_read_to_the_store(deny_list, store, monkeypatch):
    copied(deny_list)
    host, port = deny_list.subscription._conn._sock.getsockname()[:2]
    store._redis.client_kill(f"{host}:{port}")  # Redis drops the subscriber (or restarted)
    time.sleep(0.05)
    tried = store_down(monkeypatch, store)
    with pytest.raises(StoreUnavailable):
        deny_list.get_many(KEYS)
    assert tried == [KEYS]
    assert not deny_list._copy  # and what was copied is gone


def test_a_silent_subscription_is_not_trusted(deny_list, store, monkeypatch):
    """A partition sends no reset: the connection looks open and quiet. Without an answer to
    its PING the subscription stops counting as live, and is replaced."""
    monkeypatch.setattr(redis_module, "PING_SECONDS", 0.05)
    copied(deny_list)
    subscription = deny_list.subscription
    generation = subscription.generation
    monkeypatch.setattr(subscription._conn, "can_read", lambda timeout=0: False)  # silence
    time.sleep(0.1)
    deny_list.get_many(KEYS)  # sends a PING that is never answered
    time.sleep(0.2)
    tried = store_down(monkeypatch, store)
    with pytest.raises(StoreUnavailable):
        deny_list.get_many(KEYS)
    assert tried == [KEYS]
    monkeypatch.undo()
    assert copied(deny_list) == [None, None]  # a new connection, a new generation
    assert subscription.generation > generation


def test_set_and_publish_is_one_transaction(store):
    """Both or neither: a subscriber never misses a change of a deny-list key."""
    pubsub = store._redis.pubsub()
    pubsub.subscribe(REVOCATION_CHANNEL)
    pubsub.get_message(timeout=1)
    announce(store, "jti", "j2", b"1")
    message = pubsub.get_message(timeout=1)
    pubsub.close()
    assert json.loads(message["data"])["value"] == "j2"
    assert store.get("deny:jti:j2") == b"1"


def test_an_unreachable_redis_is_not_dialled_on_every_read(monkeypatch):
    """While Redis refuses connections, the subscription tries again once a second, not on
    every introspection (each attempt could cost a connect timeout)."""
    store = RedisStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    deny_list = DenyList(store)
    attempts = []
    connect = deny_list.subscription._connect
    monkeypatch.setattr(deny_list.subscription, "_connect", lambda: attempts.append(1) or connect())
    for _ in range(5):
        with pytest.raises(StoreUnavailable):
            deny_list.get_many(KEYS)
    assert len(attempts) == 1
    assert not deny_list.subscription.live
