"""The key-value store in process memory: for tests and one-off tools.

Correct for a single process only, and forgets everything when that process dies; the embedded
default uses the store file (sqlite.py) instead.
"""

from __future__ import annotations

import heapq
import threading
import time

from .base import Unpublished


class MemoryStore(Unpublished):
    """In-process store: correct for a single process only, and forgets everything when that
    process dies. For tests and one-off tools; the embedded default uses SqliteStore."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap: (expiry, key)
        self._lock = threading.Lock()
        self.published: list[tuple[str, str]] = []

    def _live(self, key: str, now: float) -> tuple[bytes, float] | None:
        item = self._data.get(key)
        if item is not None and item[1] <= now:
            del self._data[key]
            return None
        return item

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._live(key, time.monotonic())
            return item[0] if item else None

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            return [item[0] if (item := self._live(key, now)) else None for key in keys]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._data[key] = (value, now + ttl)
            heapq.heappush(self._expiries, (now + ttl, key))
            self._sweep(now)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key: str, ttl: int) -> int:
        now = time.monotonic()
        with self._lock:
            item = self._live(key, now)
            value = int(item[0]) + 1 if item else 1
            if item is None:
                heapq.heappush(self._expiries, (now + ttl, key))
            self._data[key] = (str(value).encode(), item[1] if item else now + ttl)
            self._sweep(now)
            return value

    def ttl(self, key: str) -> int:
        now = time.monotonic()
        with self._lock:
            item = self._live(key, now)
            return max(0, round(item[1] - now)) if item else -2

    def subscribe(self, channel: str) -> None:
        """Nothing to follow: the store is this process's own memory."""
        return None

    def ping(self) -> bool:
        return True

    def flush(self) -> None:
        with self._lock:
            self._data.clear()
            self._expiries.clear()
            self.published.clear()

    def held(self) -> list[str]:
        """The keys this process's memory holds, expired ones not yet swept included."""
        with self._lock:
            return list(self._data)

    def queued(self) -> int:
        """How many expiry times wait in the sweep's queue (one per write still to expire)."""
        with self._lock:
            return len(self._expiries)

    def _sweep(self, now: float) -> None:
        """Forget what has expired, as it expires: memory holds the live entries only."""
        while self._expiries and self._expiries[0][0] <= now:
            expiry, key = heapq.heappop(self._expiries)
            item = self._data.get(key)
            if item is not None and item[1] == expiry:
                del self._data[key]
