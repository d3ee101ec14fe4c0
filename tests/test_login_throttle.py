"""The login throttle's contract (token_service/throttle.py), held against each backend of the
shared key-value store: in memory, the store file and Redis. No HTTP here (test_throttle.py
and test_lifecycle.py hold the answers): what the credentials check (oauth2/login.py) relies on."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from token_service.config import Settings
from token_service.kv import RedisStore
from token_service.throttle import KeyValueLoginThrottle, LoginThrottle, TooManyAttempts

FREE = 2


def throttle_on(store, free: int = FREE, cap: int = 900) -> LoginThrottle:
    settings = replace(
        Settings.from_env({}), login_throttle_free_attempts=free, login_throttle_max_delay=cap
    )
    return KeyValueLoginThrottle(store, settings)


@pytest.fixture
def throttle(kv_store) -> LoginThrottle:
    return throttle_on(kv_store)


def test_free_failures_then_doubling_locks(throttle):
    assert throttle.check("bob@acme.test", "10.0.0.1") is False  # nothing on record
    delays = [throttle.failed("bob@acme.test", "10.0.0.1") for _ in range(FREE + 3)]
    assert delays == [0] * FREE + [1, 2, 4]
    with pytest.raises(TooManyAttempts) as locked:
        throttle.check("bob@acme.test", "10.0.0.2")  # the account is locked from anywhere
    assert 1 <= locked.value.retry_after <= 4
    assert throttle.check("carol@acme.test", "10.0.0.2") is False


def test_one_counter_for_every_spelling_of_an_identifier(throttle):
    for variant in ["BOB@acme.test", " bob@acme.test"]:
        throttle.failed(variant, None)
    assert throttle.failed("Bob@Acme.Test ", None) == 1


def test_a_lock_ends_on_time(kv_store):
    throttle = throttle_on(kv_store, free=0)
    assert throttle.failed("bob@acme.test", None) == 1
    with pytest.raises(TooManyAttempts):
        throttle.check("bob@acme.test", None)
    time.sleep(1.1)
    assert throttle.check("bob@acme.test", None) is True  # unlocked, failures on record


def test_the_lock_is_capped(kv_store):
    throttle = throttle_on(kv_store, cap=8)
    delays = [throttle.failed("victim@acme.test", None) for _ in range(12)]
    assert max(delays) == 8 == delays[-1]


def test_a_success_resets_the_account_not_the_address(throttle):
    for _ in range(FREE):
        throttle.failed("bob@acme.test", "10.0.0.1")
    assert throttle.check("bob@acme.test", "10.0.0.1") is True
    throttle.succeeded("bob@acme.test", "10.0.0.1", on_record=False)  # nothing reset
    assert throttle.failed("bob@acme.test", "10.0.0.1") == 1
    throttle.succeeded("bob@acme.test", "10.0.0.1")
    assert throttle.check("bob@acme.test", "10.0.0.1") is False
    # The address kept its FREE + 1 failures: it locks after 4 x FREE, whichever the account.
    others = [throttle.failed(f"guess{n}@acme.test", "10.0.0.1") for n in range(3 * FREE)]
    assert others == [0] * (3 * FREE - 1) + [1]


def test_redis_down_throttles_nothing():
    """Fail open (DESIGN section 6): argon2id still bounds guessing."""
    throttle = throttle_on(RedisStore("redis://127.0.0.1:1/0"))
    assert throttle.check("bob@acme.test", "10.0.0.1") is True  # assume failures on record
    assert throttle.failed("bob@acme.test", "10.0.0.1") == 0
    throttle.succeeded("bob@acme.test", "10.0.0.1")
