"""The fixed-window rate counter's contract (token_service/rate.py), held against each backend
of the shared key-value store: in memory, the store file and Redis."""

from __future__ import annotations

import time

import pytest

from token_service.kv import RedisStore, StoreUnavailable
from token_service.rate import KeyValueRateCounter


@pytest.fixture
def counter(kv_store):
    return KeyValueRateCounter(kv_store)


def test_the_limit_passes_and_the_next_event_is_told_when_to_retry(counter):
    assert [counter.over("rate:a", 3, 60) for _ in range(3)] == [0, 0, 0]
    retry_after = counter.over("rate:a", 3, 60)
    assert 59 <= retry_after <= 60
    assert 1 <= counter.over("rate:a", 3, 60) <= 60  # still over: every event counts
    assert counter.over("rate:b", 3, 60) == 0  # each key has its own window


def test_the_window_is_fixed_from_its_first_event(counter):
    """Events inside a window do not stretch it: it closes `window` seconds after the first."""
    assert counter.over("rate:w", 1, 1) == 0
    time.sleep(0.6)
    assert counter.over("rate:w", 1, 1) == 1  # over, and the window closes within a second
    time.sleep(0.6)
    assert counter.over("rate:w", 1, 1) == 0  # a new window (a sliding one would refuse)


def test_redis_down_raises_for_the_caller_to_decide():
    with pytest.raises(StoreUnavailable):
        KeyValueRateCounter(RedisStore("redis://127.0.0.1:1/0")).over("rate:a", 3, 60)
