"""The fast shared store: deny-lists, throttling counters, grace responses.

Redis when `REDIS_URL` is set; otherwise (the embedded default) a SQLite file of its own, which
outlives a worker and is shared by the processes of one host, and says so at start-up. All
speak the same small interface; MemoryStore, in process memory, is for tests and tools.
"""

from __future__ import annotations

import heapq
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from . import metrics, slots

log = logging.getLogger(__name__)

#: Channel on which every revocation is published (see docs in README).
REVOCATION_CHANNEL = "token-service:revocations"


class StoreUnavailable(RuntimeError):
    """The store cannot be reached; callers decide whether to fail open or closed."""


def _unavailable(exc: Exception) -> StoreUnavailable:
    """A failed Redis call, counted (metrics: token_service_backend_errors_total)."""
    metrics.backend_error("redis")
    return StoreUnavailable(str(exc))


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


class Store(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def send_set(self, key: str, value: bytes, ttl: int) -> Pending: ...
    def get_many(self, keys: list[str]) -> list[bytes | None]: ...
    def set(self, key: str, value: bytes, ttl: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def incr(self, key: str, ttl: int) -> int: ...
    def ttl(self, key: str) -> int: ...
    def set_and_publish(self, key: str, value: bytes, ttl: int, channel: str, message: str): ...
    def subscribe(self, channel: str) -> Subscription | None: ...
    def ping(self) -> bool: ...


class _Unpublished:
    """Publishing for a store nobody subscribes to: the last 1,000 messages, kept for tests."""

    published: list[tuple[str, str]]

    def set_and_publish(self, key: str, value: bytes, ttl: int, channel: str, message: str):
        self.set(key, value, ttl)
        self.published.append((channel, message))
        del self.published[:-1000]


class MemoryStore(_Unpublished):
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

    def send_set(self, key: str, value: bytes, ttl: int) -> Pending:
        self.set(key, value, ttl)
        return Pending()

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

    def _sweep(self, now: float) -> None:
        """Forget what has expired, as it expires: memory holds the live entries only."""
        while self._expiries and self._expiries[0][0] <= now:
            expiry, key = heapq.heappop(self._expiries)
            item = self._data.get(key)
            if item is not None and item[1] == expiry:
                del self._data[key]


class SqliteStore(_Unpublished):
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

    def send_set(self, key: str, value: bytes, ttl: int) -> Pending:
        try:
            self.set(key, value, ttl)
        except StoreUnavailable as exc:
            return Pending(error=exc)
        return Pending()

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


class RedisStore:
    """Redis-backed store; every failure surfaces as StoreUnavailable."""

    def __init__(self, url: str, prefix: str = "ts:") -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        self._redis = redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        self.prefix = prefix

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except self._errors as exc:
            raise _unavailable(exc) from exc

    def get(self, key: str) -> bytes | None:
        return self._call(self._redis.get, self.prefix + key)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return self._call(self._redis.mget, [self.prefix + k for k in keys])

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self._call(lambda: self._redis.set(self.prefix + key, value, ex=max(1, ttl)))

    def send_set(self, key: str, value: bytes, ttl: int) -> Pending:
        """SET, sent now, its reply read on `wait()`: the round trip overlaps whatever the
        caller does in between. The caller must wait() (in a finally) to free the connection."""
        pool = self._redis.connection_pool
        try:
            conn = pool.get_connection()
        except self._errors as exc:
            return Pending(error=_unavailable(exc))

        def wait() -> None:
            try:
                conn.read_response()
            except self._errors as exc:
                conn.disconnect()
                raise _unavailable(exc) from exc
            finally:
                pool.release(conn)

        try:
            conn.send_command("SET", self.prefix + key, value, "EX", max(1, ttl))
        except self._errors as exc:
            conn.disconnect()
            pool.release(conn)
            return Pending(error=_unavailable(exc))
        return Pending(wait)

    def delete(self, key: str) -> None:
        self._call(self._redis.delete, self.prefix + key)

    def incr(self, key: str, ttl: int) -> int:
        def run() -> int:
            pipe = self._redis.pipeline()
            pipe.incr(self.prefix + key)
            pipe.expire(self.prefix + key, ttl, nx=True)
            return pipe.execute()[0]

        return self._call(run)

    def ttl(self, key: str) -> int:
        return self._call(self._redis.ttl, self.prefix + key)

    def set_and_publish(self, key: str, value: bytes, ttl: int, channel: str, message: str):
        """SET and PUBLISH in one MULTI: a subscriber never misses a change of the key."""

        def run() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self.prefix + key, value, ex=max(1, ttl))
            pipe.publish(channel, message)
            pipe.execute()

        self._call(run)

    def subscribe(self, channel: str) -> Subscription:
        return Subscription(self._redis.connection_pool, channel, self._errors)

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except self._errors:
            return False

    def flush(self) -> None:
        """Delete this store's keys (tests)."""
        keys = list(self._redis.scan_iter(match=self.prefix + "*", count=1000))
        if keys:
            self._redis.delete(*keys)


PING_SECONDS = 1.0


class Subscription:
    """This process's subscription to one channel, on a connection of its own, read without
    ever blocking: `poll()` returns the messages that have arrived since the last call.

    Callers keep state derived from the messages (a copy of what they describe) and may trust
    it only while `live`: Redis confirmed the subscription, and answered a PING within the last
    3 seconds, which proves that every message published before that PING has been read. A
    connection that failed, or went silent (a partition sends no reset), is replaced on a later
    poll and `generation` moves on: state built from the old one must then be dropped. Nothing
    reconnects behind the caller's back.
    """

    def __init__(self, pool, channel: str, errors: tuple) -> None:
        self._pool = pool
        self.channel = channel
        self._errors = errors
        self._conn = None
        self._pid = 0
        self.generation = 0
        self.live = False
        self._confirmed = False
        self._pinged = self._ponged = self._retry_at = 0.0
        self._awaiting_pong = False

    def poll(self) -> list[bytes]:
        if self._conn is None or self._pid != os.getpid():
            if time.monotonic() < self._retry_at and self._pid == os.getpid():
                return []  # Redis refused a moment ago: no connect timeout on every request
            self._connect()
            if self._conn is None:
                self._retry_at = time.monotonic() + PING_SECONDS
                return []
        messages = []
        try:
            while self._conn.can_read(timeout=0):
                # RESP3 (redis-py's default) pushes messages and answers PING with PONG;
                # RESP2 sends both as arrays: ["message", channel, data], ["pong", ""].
                reply = self._conn.read_response(push_request=True)
                kind = reply[0] if isinstance(reply, list) else reply
                if kind == b"message":
                    messages.append(reply[2])
                elif kind in (b"PONG", b"pong"):
                    self._ponged, self._awaiting_pong = time.monotonic(), False
                elif kind == b"subscribe":
                    self._confirmed, self._ponged = True, time.monotonic()
                    self.generation += 1
            now = time.monotonic()
            if self._awaiting_pong and now - self._pinged > 3 * PING_SECONDS:
                raise TimeoutError("no answer to PING")
            if not self._awaiting_pong and now - self._ponged >= PING_SECONDS:
                self._conn.send_command("PING")
                self._pinged, self._awaiting_pong = now, True
            self.live = self._confirmed and now - self._ponged <= 3 * PING_SECONDS
        except (*self._errors, TimeoutError):
            log.warning("store unavailable: subscription to %s lost", self.channel)
            metrics.backend_error("redis")
            self._drop()
        return messages

    def _connect(self) -> None:
        self._drop()
        self._pid = os.getpid()
        # Outside the pool (it is no command connection), and without redis-py's health check:
        # a subscribed connection answers PING in its own way, handled above.
        conn = self._pool.connection_class(
            **{**self._pool.connection_kwargs, "health_check_interval": 0}
        )
        try:
            conn.connect()
            conn.send_command("SUBSCRIBE", self.channel)
        except self._errors:
            conn.disconnect()
            return
        self._conn = conn  # live once Redis confirms, on a later poll

    def _drop(self) -> None:
        self.live = self._confirmed = self._awaiting_pong = False
        if self._conn is not None:
            self._conn.disconnect()
        self._conn = None

    def close(self) -> None:
        self._drop()


def embedded_store_path(database_url: str, instance_path: str | os.PathLike) -> Path:
    """Where the embedded store lives: beside a SQLite database file (`x.sqlite3` gets
    `x.store.sqlite3`), else in the instance folder."""
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        database = Path(database_url.removeprefix("sqlite:///"))
        return database.with_name(f"{database.stem}.store{database.suffix or '.sqlite3'}")
    return Path(instance_path) / "token_store.sqlite3"


def make_store(redis_url: str | None, prefix: str, embedded_path: str | os.PathLike) -> Store:
    """Redis if configured, else the embedded SQLite store (announced: it serves one host)."""
    if redis_url:
        return RedisStore(redis_url, prefix)
    log.warning(
        "REDIS_URL is not set: deny-lists, throttling and grace responses are kept in %s, "
        "shared by the processes of this host only; set REDIS_URL to run on several hosts.",
        embedded_path,
    )
    return SqliteStore(embedded_path)
