"""The shared key-value store's interface, and what its backends share: the error every
backend raises when it cannot answer, and the handle of a write already sent.

One interface, three backends (memory.py, sqlite.py, redis.py); `make_store` (this package's
__init__) picks one. The ports of the protocol code (oauth2/grace.py, throttle.py, rate.py)
are built on it; the deny-list (revocation.py) reads and publishes through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .redis import Subscription

#: Channel on which every revocation is published (see docs in README).
REVOCATION_CHANNEL = "token-service:revocations"


class StoreUnavailable(RuntimeError):
    """The store cannot be reached; callers decide whether to fail open or closed."""


class Pending:
    """A write already sent; `wait()` reads its outcome (raises StoreUnavailable)."""

    def __init__(self, wait=None, error: StoreUnavailable | None = None) -> None:
        self._wait = wait
        self._error = error

    def wait(self) -> None:
        if self._error is not None:
            raise self._error
        if self._wait is not None:
            wait, self._wait = self._wait, None
            wait()


class KeyValueStore(Protocol):
    """Bytes under string keys, each with an expiry in seconds; counters; publishing. Every
    operation raises StoreUnavailable when the backend cannot answer."""

    def get(self, key: str) -> bytes | None: ...
    def get_many(self, keys: list[str]) -> list[bytes | None]: ...
    def set(self, key: str, value: bytes, ttl: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def incr(self, key: str, ttl: int) -> int: ...
    def ttl(self, key: str) -> int: ...
    def set_and_publish(self, key: str, value: bytes, ttl: int, channel: str, message: str): ...
    def subscribe(self, channel: str) -> Subscription | None: ...
    def ping(self) -> bool: ...
    def flush(self) -> None: ...


class Unpublished:
    """Publishing for a store nobody subscribes to: the last 1,000 messages, kept for tests."""

    published: list[tuple[str, str]]

    def set_and_publish(self, key: str, value: bytes, ttl: int, channel: str, message: str):
        self.set(key, value, ttl)
        self.published.append((channel, message))
        del self.published[:-1000]
