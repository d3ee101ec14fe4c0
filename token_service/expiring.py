"""A bounded map whose entries expire, for the per-worker caches of the hot paths.

cachetools' TTLCache costs about 4 µs per lookup (a timer context, an expiry walk); an
introspection made six of them, a sixth of its time (docs/performance.md). Here a lookup is one
dict access and one comparison. The price: when full, the map drops what has expired and, if
that is not enough, everything. Every entry caches something that can be read again, so that
costs one read per entry, never a wrong answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

_ABSENT = object()


class ExpiringMap:
    """Safe to share between a worker's threads without a lock: every operation is one dict
    operation, or a rebuild from a copy (taken in one step) swapped in whole. A race can lose
    an entry (one more read later), never return another key's value."""

    __slots__ = ("_clock", "_data", "maxsize", "ttl")

    def __init__(
        self, maxsize: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._data: dict[Hashable, tuple[Any, float]] = {}

    def get(self, key: Hashable, default: Any = None) -> Any:
        item = self._data.get(key)
        if item is None:
            return default
        if item[1] <= self._clock():
            self._data.pop(key, None)
            return default
        return item[0]

    def put(self, key: Hashable, value: Any, expires_at: float | None = None) -> None:
        """Keep `value` until `expires_at` (on this map's clock), by default for `ttl`."""
        now = self._clock()
        if len(self._data) >= self.maxsize and key not in self._data:
            # Iterating the live dict while another thread inserts raises RuntimeError.
            live = {k: v for k, v in self._data.copy().items() if v[1] > now}
            self._data = live if len(live) < self.maxsize else {}
        self._data[key] = (value, now + self.ttl if expires_at is None else expires_at)

    def pop(self, key: Hashable) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data = {}

    def __contains__(self, key: Hashable) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def __len__(self) -> int:
        return len(self._data)
