"""One database connection per request slot for the session stores' own statements.

A worker runs each request in one of its slots (token_service/slots.py), one request at a time
per slot, so a connection of the slot's own is a connection of the request's own, without the
pool's checkout, reset and return on every request (with the teardown that gave it back, a
tenth of a refresh's Python on PostgreSQL). It serves whichever thread holds the slot (the
server's threads come and go). Outside a slot (commands, tests that call a store from threads
of their own) the connection is the thread's own, and closed when that thread ends.

Each connection is taken from the engine once, so that the engine's connect events run
(SQLite's pragmas), and detached from its pool: the ORM session's pool stays whole for the ORM.
It is closed when the engine is disposed (`engine_disposed`) or when a statement finds it
broken; the next statement of that slot or thread opens another. After a fork the child opens
its own: a connection is never used, nor closed, by a process that did not open it (closing
would end the parent's session on the server).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable

from sqlalchemy import event

from ... import slots
from ...extensions import db


class Held:
    """A slot's or a thread's connection and, where the backend wants one, its cursor."""

    __slots__ = ("__weakref__", "closed", "conn", "cursor", "pid")

    def __init__(self, conn, cursor=None) -> None:
        self.conn, self.cursor, self.pid, self.closed = conn, cursor, os.getpid(), False

    def close(self) -> None:
        if not self.closed and self.pid == os.getpid():
            self.closed = True
            with contextlib.suppress(Exception):  # a broken one has nothing left to close
                self.conn.close()

    def __del__(self) -> None:  # the thread that owned it has ended
        self.close()


class SlotConnections:
    """`get()`: this slot's (or thread's) connection, opened (and prepared) on first use."""

    def __init__(self, prepare: Callable[[object], Held]) -> None:
        self._prepare = prepare
        self._key = f"connection_{id(self)}"  # one attribute of the slot per store
        self._opened: weakref.WeakSet[Held] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._engines: weakref.WeakSet = weakref.WeakSet()

    def get(self) -> Held:
        local = slots.local()
        held = getattr(local, self._key, None)
        if held is None or held.closed or held.pid != os.getpid():
            held = self._open()
            setattr(local, self._key, held)
        return held

    def drop(self, held: Held) -> None:
        """A connection found broken: closed, and forgotten by its slot or thread."""
        local = slots.local()
        if getattr(local, self._key, None) is held:
            delattr(local, self._key)
        held.close()

    def _open(self) -> Held:
        engine = db.engine
        pooled = engine.raw_connection()
        conn = pooled.driver_connection
        pooled.detach()
        held = self._prepare(conn)
        with self._lock:
            self._opened.add(held)
            if engine not in self._engines:
                self._engines.add(engine)
                event.listen(engine, "engine_disposed", self._close_all)
        return held

    def _close_all(self, _engine=None) -> None:
        with self._lock:
            opened = list(self._opened)
        for held in opened:
            held.close()
