"""Fixed-window rate counters: the `RateCounter` port, and its implementation on the shared
key-value store (kv/: memory, the store file, Redis).

A window opens with the first event under a key and closes `window` seconds later, whatever
comes in between; the next event opens a new one. Cheaper than a sliding window (one counter,
one round trip while within the limit), at the price of letting up to twice the limit through
across a window's edge. The caller picks the key (it names what is counted, and who) and
decides what an unavailable store means: fail open or closed (DESIGN section 6).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from .kv import KeyValueStore


class RateCounter(ABC):
    @abstractmethod
    def over(self, key: str, limit: int, window: int) -> int:
        """Count one event under `key`: 0 while its window holds at most `limit` events, else
        the seconds until the window closes (1 to `window`, for Retry-After: RFC 9110 §10.2.3).
        Raises StoreUnavailable."""


class KeyValueRateCounter(RateCounter):
    """The counter on the shared key-value store: `incr` keeps the expiry of its first
    increment on every backend, which is the window; the window's rest is asked for only when
    over the limit."""

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    def over(self, key: str, limit: int, window: int) -> int:
        if self.store.incr(key, window) <= limit:
            return 0
        # -2 (the window closed between the two calls) or 0 (closing now): retry in a second.
        return min(max(1, self.store.ttl(key)), window)
