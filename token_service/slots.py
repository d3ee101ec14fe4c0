"""A worker's request slots: how many requests run the app at once, and what each slot keeps.

The server (granian, `token_service/serve.py`) reads requests in Rust and hands each to a pool
of Python threads, which grows under load and shrinks when idle. A thread may wait there on a
client's body for as long as the client takes: reading a body happens outside the slots
(api/body.py), so a stalled client holds a waiting thread, never a slot. The app itself runs in
one of `TOKEN_SERVICE_THREADS` slots: more would only queue on the GIL and, on SQLite, on its one
write lock, and lengthen the tail (docs/performance.md).

A slot is held by one thread at a time, so what must not be shared between concurrent requests
but should outlive one (the session stores' connections, `oauth2/sessions/connections.py`) is
kept per slot: as many of them as slots, whichever pool threads come and go. Code that runs
outside a slot (commands, tests that call a store from threads of their own) gets a namespace of
its own thread instead.
"""

from __future__ import annotations

import threading
from collections import deque
from types import SimpleNamespace

_thread = threading.local()


def local() -> SimpleNamespace:
    """The namespace of the slot this thread holds, else of this thread."""
    slot = getattr(_thread, "slot", None)
    if slot is None:
        slot = _thread.own = getattr(_thread, "own", None) or SimpleNamespace()
    return slot


class _Turn:
    """A request waiting for a slot: its lock is released when a slot is handed to it."""

    __slots__ = ("lock", "slot")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.slot: SimpleNamespace | None = None


class Slots:
    """`n` slots: `enter()` waits for a free one and makes it this thread's; `leave()` frees it.

    First come, first served: a slot that is left goes straight to the request that has waited
    longest, never to one that arrives meanwhile (a semaphore lets newcomers take it, and the
    unlucky waiter's wait has no bound: measured, it doubled the p99 of a refresh)."""

    def __init__(self, n: int) -> None:
        self._free = [SimpleNamespace() for _ in range(max(n, 1))]
        self._waiting: deque[_Turn] = deque()
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self._free:  # never while others wait: leave() hands slots to them first
                _thread.slot = self._free.pop()
                return
            turn = _Turn()
            self._waiting.append(turn)
        turn.lock.acquire()
        _thread.slot = turn.slot

    def leave(self) -> None:
        slot, _thread.slot = _thread.slot, None
        with self._lock:
            if not self._waiting:
                self._free.append(slot)
                return
            turn = self._waiting.popleft()
        turn.slot = slot
        turn.lock.release()
