"""The shared key-value store: deny-lists, login throttles, rate counters, grace responses.

Not the session store (oauth2/sessions: sessions and refresh tokens, in the database). Redis
when `REDIS_URL` is set (redis.py); otherwise, the embedded default, the store file: a SQLite
file of its own (sqlite.py), which outlives a worker and is shared by the processes of one
host, and says so at start-up. All speak one small interface (base.py); MemoryStore
(memory.py), in process memory, is for tests and tools.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .base import REVOCATION_CHANNEL, KeyValueStore, Pending, StoreUnavailable
from .memory import MemoryStore
from .redis import RedisStore, Subscription
from .sqlite import SqliteStore

__all__ = [
    "REVOCATION_CHANNEL",
    "KeyValueStore",
    "MemoryStore",
    "Pending",
    "RedisStore",
    "SqliteStore",
    "StoreUnavailable",
    "Subscription",
    "embedded_store_path",
    "make_store",
]

log = logging.getLogger(__name__)


def embedded_store_path(database_url: str, instance_path: str | os.PathLike) -> Path:
    """Where the store file lives: beside a SQLite database file (`x.sqlite3` gets
    `x.store.sqlite3`), else in the instance folder."""
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        database = Path(database_url.removeprefix("sqlite:///"))
        return database.with_name(f"{database.stem}.store{database.suffix or '.sqlite3'}")
    return Path(instance_path) / "token_store.sqlite3"


def make_store(
    redis_url: str | None, prefix: str, embedded_path: str | os.PathLike
) -> KeyValueStore:
    """Redis if configured, else the store file (announced: it serves one host)."""
    if redis_url:
        return RedisStore(redis_url, prefix)
    log.warning(
        "REDIS_URL is not set: deny-lists, throttling and grace responses are kept in %s, "
        "shared by the processes of this host only; set REDIS_URL to run on several hosts.",
        embedded_path,
    )
    return SqliteStore(embedded_path)
