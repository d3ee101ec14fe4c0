"""The store file: the key-value store of the embedded default, a SQLite file of its own.

Deny-list entries, login throttles, rate counters and grace responses outlive the worker that
wrote them and are seen by every process of the host at once. Without `REDIS_URL` this is the
store (kv/__init__.make_store), and the service says so at start-up.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .. import slots
from .base import StoreUnavailable, Unpublished

log = logging.getLogger(__name__)


class SqliteStore(Unpublished):
    """The embedded default's store: a SQLite file of its own, so that deny-list entries,
    login throttles and grace responses outlive the worker that wrote them (a restart, a
    worker killed on timeout) and are seen by every process of the host at once.

    A file of its own, not a table of the service's database, because the request's own
    transaction holds that database's write lock from its BEGIN (see database.py): a store
    write on another connection would wait for it, in the same thread, until the busy timeout.
    Here a write never waits for a request's transaction, and it stands whether or not the
    request commits, exactly as a Redis write does. WAL with synchronous=NORMAL: a commit
    costs no fsync (an entry written just before a power cut may be lost, never one from
    before the last checkpoint; a crash of the process loses nothing).

    One connection per request slot, or per thread outside a slot (token_service/slots.py: a
    slot's connection serves one request at a time, whichever thread holds it; a pool thread's
    own would leave a connection and its page cache behind every thread). Reads take no lock
    (WAL: readers never wait). Writes of one process take a lock of their own first: SQLite's
    busy handler would make a thread that finds the file locked sleep for milliseconds, a lock
    wakes it as soon as the writer is done; between processes SQLite's locking orders them.
    Expiry times are wall-clock, since they must mean the same to another process and after a
    restart.
    """

    #: Seconds between sweeps of expired entries (a read never returns one anyway).
    SWEEP_SECONDS = 60.0

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = f"store_{id(self)}"  # this store's attribute of a slot
        self._writing = threading.Lock()
        self._swept_at = 0.0
        self.published: list[tuple[str, str]] = []
        self._call(lambda db: db.executescript(_SQLITE_STORE_SCHEMA))

    def _db(self) -> sqlite3.Connection:
        local = slots.local()
        conn, pid = getattr(local, self._key, (None, None))
        if conn is None or pid != os.getpid():  # a forked child opens its own
            conn = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            setattr(local, self._key, (conn, os.getpid()))
        return conn

    def _call(self, work):
        try:
            return work(self._db())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    def _write(self, work):
        with self._writing:
            return self._call(work)

    def get(self, key: str) -> bytes | None:
        row = self._call(lambda db: db.execute(_GET, (key, time.time())).fetchone())
        return row[0] if row else None

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        sql = _GET_MANY.format(", ".join("?" * len(keys)))
        rows = self._call(lambda db: db.execute(sql, (*keys, time.time())).fetchall())
        found = dict(rows)
        return [found.get(key) for key in keys]

    def set(self, key: str, value: bytes, ttl: int) -> None:
        now = time.time()
        self._write(lambda db: db.execute(_SET, (key, value, now + max(1, ttl))))
        self._maybe_sweep(now)

    def delete(self, key: str) -> None:
        self._write(lambda db: db.execute(_DELETE, (key,)))

    def incr(self, key: str, ttl: int) -> int:
        """One statement, so atomic between threads and processes; a counter keeps the expiry
        of its first increment, as Redis's INCR with EXPIRE NX."""
        now = time.time()
        row = self._write(lambda db: db.execute(_INCR, (key, now + ttl, now, now)).fetchone())
        return int(row[0])

    def ttl(self, key: str) -> int:
        now = time.time()
        row = self._call(lambda db: db.execute(_EXPIRY, (key, now)).fetchone())
        return max(0, round(row[0] - now)) if row else -2

    def subscribe(self, channel: str) -> None:
        """Nothing to follow: every read asks the file, which every process shares."""
        return None

    def ping(self) -> bool:
        try:
            self._call(lambda db: db.execute("SELECT 1").fetchone())
        except StoreUnavailable:
            return False
        return True

    def flush(self) -> None:
        """Delete every entry (tests)."""
        self._write(lambda db: db.execute("DELETE FROM store_entries"))
        self.published.clear()

    def _maybe_sweep(self, now: float) -> None:
        """Delete what has expired, once a minute: the file holds the live entries, roughly."""
        if now - self._swept_at < self.SWEEP_SECONDS:
            return
        self._swept_at = now
        try:
            self._write(lambda db: db.execute(_SWEEP, (now,)))
        except StoreUnavailable:
            log.warning("store: expired entries not swept from %s", self.path)


# A rowid table with the expiry before the value: a lookup goes by the key's index (the `+`
# keeps the planner off anything else), and the sweep's scan reads no overflow page of a grace
# response. No index on the expiry: it would cost every write, to speed up one scan a minute.
_SQLITE_STORE_SCHEMA = """
    CREATE TABLE IF NOT EXISTS store_entries (
        key TEXT PRIMARY KEY, expires_at REAL NOT NULL, value BLOB NOT NULL
    );
"""
_GET = "SELECT value FROM store_entries WHERE key = ? AND +expires_at > ?"
_GET_MANY = "SELECT key, value FROM store_entries WHERE key IN ({}) AND +expires_at > ?"
_SET = """
    INSERT INTO store_entries (key, value, expires_at) VALUES (?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
_DELETE = "DELETE FROM store_entries WHERE key = ?"
# Values are bytes, as Redis gives them: the count is kept as its decimal digits.
_INCR = """
    INSERT INTO store_entries (key, value, expires_at) VALUES (?1, CAST('1' AS BLOB), ?2)
    ON CONFLICT (key) DO UPDATE SET
        value = CASE WHEN expires_at > ?3
                     THEN CAST(CAST(CAST(value AS TEXT) AS INTEGER) + 1 AS BLOB)
                     ELSE CAST('1' AS BLOB) END,
        expires_at = CASE WHEN expires_at > ?4 THEN expires_at ELSE excluded.expires_at END
    RETURNING CAST(value AS TEXT)
"""
_EXPIRY = "SELECT expires_at FROM store_entries WHERE key = ? AND +expires_at > ?"
_SWEEP = "DELETE FROM store_entries WHERE expires_at <= ?"
