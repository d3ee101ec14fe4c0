"""The key-value store on Redis, when `REDIS_URL` is set: shared by every host; and this
process's subscription to a channel of it (the revocation channel, revocation.DenyList).
"""

from __future__ import annotations

import logging
import os
import time

from .. import metrics
from .base import Pending, StoreUnavailable

log = logging.getLogger(__name__)


def _unavailable(exc: Exception) -> StoreUnavailable:
    """A failed Redis call, counted (metrics: token_service_backend_errors_total)."""
    metrics.backend_error("redis")
    return StoreUnavailable(str(exc))


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
