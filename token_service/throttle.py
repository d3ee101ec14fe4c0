"""Login throttling per account and per client address: the `LoginThrottle` port, which the
one credentials check (oauth2/login.py) sees, and its implementation on the shared key-value
store (kv/: memory, the store file, Redis).

After a few free failures, each further failure locks the key for 2^n seconds, capped
(`login_throttle_max_delay`, default 15 min): an attacker can slow a victim's logins down,
never lock them out for good. Counters forget after a day without failures. A successful login
resets its account's counter; the address counter decays on its own (a valid login must not
let an attacker reset the address he guesses from). Unknown and known emails count alike.
If the store is down, logins go on unthrottled (fail open: argon2id still bounds guessing) and
the outage is logged.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from abc import ABC, abstractmethod

from authlib.oauth2.rfc6749.errors import OAuth2Error

from . import metrics
from .inputs import email_key
from .kv import KeyValueStore, StoreUnavailable

log = logging.getLogger(__name__)

FAILURE_MEMORY = 86400
ADDRESS_FACTOR = 4  # an office behind one NAT address gets more free attempts than one account


class TooManyAttempts(OAuth2Error):
    """HTTP 429 with Retry-After; nothing else about the account changes."""

    error = "slow_down"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(description="Too many failed logins. Retry later.")
        self.retry_after = max(1, retry_after)

    def get_headers(self):
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]


def _keys(username: str, address: str | None) -> list[tuple[str, int]]:
    # One account, however its address is typed ("ＡＬＩＣＥ@acme.test" is alice's).
    account_name = email_key(username) or username.strip().lower()
    digest = hashlib.sha256(account_name.encode("utf-8", "surrogatepass"))
    account = digest.hexdigest()[:32]
    keys = [(f"throttle:acct:{account}", 1)]
    if address:
        keys.append((f"throttle:addr:{address}", ADDRESS_FACTOR))
    return keys


class LoginThrottle(ABC):
    """What the credentials check asks before and tells after verifying a password. Every
    method fails open: with the store down it throttles nothing, and logs so."""

    @abstractmethod
    def check(self, username: str, address: str | None) -> bool:
        """Raise TooManyAttempts while the account or the address is locked; else say whether
        the account has failures (or a lock) on record."""

    @abstractmethod
    def failed(self, username: str, address: str | None) -> int:
        """Count a failure; returns the lock in seconds now in force (0 if none)."""

    @abstractmethod
    def succeeded(self, username: str, address: str | None, on_record: bool = True) -> None:
        """Reset the account's counter, if `check` found one (`on_record`)."""


class KeyValueLoginThrottle(LoginThrottle):
    """The throttle on the shared key-value store, whichever backend: a counter per key
    (`incr`, which keeps its first expiry on every backend) and a lock beside it that holds
    its own expiry time, so that `check` reads both keys' locks in one round trip."""

    def __init__(self, store: KeyValueStore, settings) -> None:
        self.store = store
        self.free = settings.login_throttle_free_attempts
        self.cap = settings.login_throttle_max_delay

    def check(self, username: str, address: str | None) -> bool:
        keys = _keys(username, address)
        try:
            values = self.store.get_many([key + ":lock" for key, _ in keys] + [keys[0][0]])
        except StoreUnavailable:
            log.error("store unavailable: login throttling is off")
            return True
        now = time.time()
        for (key, _), value in zip(keys, values, strict=False):
            if value is not None:
                expiry = float(value)
                if expiry < 1e9:  # a lock written before locks held their expiry
                    expiry = now + self.store.ttl(key + ":lock")
                remaining = math.ceil(expiry - now)
                if remaining > 0:
                    metrics.login_throttled()
                    raise TooManyAttempts(remaining)
        return values[0] is not None or values[-1] is not None  # the account's lock, counter

    def failed(self, username: str, address: str | None) -> int:
        longest = 0
        try:
            for key, factor in _keys(username, address):
                failures = self.store.incr(key, FAILURE_MEMORY)
                over = failures - self.free * factor
                if over > 0:
                    delay = min(2 ** min(over - 1, 20), self.cap)
                    expiry = str(time.time() + delay).encode()
                    self.store.set(key + ":lock", expiry, delay)
                    longest = max(longest, delay)
        except StoreUnavailable:
            log.error("store unavailable: login failure not counted")
        return longest

    def succeeded(self, username: str, address: str | None, on_record: bool = True) -> None:
        if not on_record:
            return
        key = _keys(username, None)[0][0]
        try:
            self.store.delete(key)
            self.store.delete(key + ":lock")
        except StoreUnavailable:
            log.error("store unavailable: login counter not reset")
