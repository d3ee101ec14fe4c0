"""Grace responses: the successor of a just-rotated refresh token, kept for a few seconds so that
a retried request or a second tab gets the same answer instead of logging the buyer out; and
`GraceStore`, the port where they wait, with its implementations on the shared key-value store.

The response is encrypted (AES-256-GCM) under a key derived (HKDF-SHA-256) from the presented
refresh token, which the store never sees: reading Redis gives no usable token. The store key is
a separate hash of the token, so it does not match the database's hash either.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from abc import ABC, abstractmethod

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..kv import KeyValueStore, Pending, RedisStore, StoreUnavailable


def _key(token: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"token-service/grace/v1"
    ).derive(token.encode())


def store_key(token: str, successor_hash: str) -> str:
    """One key per rotation attempt: only the attempt that won is ever looked up, through the
    successor recorded on the consumed row."""
    digest = hashlib.sha256(b"grace\x00" + token.encode()).hexdigest()
    return f"grace:{digest}:{successor_hash[:32]}"


def fingerprint(client_id: str, legal_entity_id: str | None, scope: str | None) -> str:
    """The request parameters that must match for a replay to get the stored response."""
    return json.dumps([client_id, legal_entity_id, scope])


def seal(token: str, params: str, response: dict) -> bytes:
    nonce = os.urandom(12)
    plaintext = orjson.dumps({"params": params, "response": response})
    return nonce + AESGCM(_key(token)).encrypt(nonce, plaintext, b"grace")


def open_sealed(token: str, blob: bytes) -> tuple[str, dict] | None:
    """(params, response), or None if the blob was not sealed under this token."""
    try:
        data = orjson.loads(AESGCM(_key(token)).decrypt(blob[:12], blob[12:], b"grace"))
    except (InvalidTag, ValueError):
        return None
    return data["params"], data["response"]


class GraceStore(ABC):
    """Where sealed grace responses wait. The refresh grant keeps one before its rotation
    commits and waits for the write after; a request that finds the token consumed fetches it.
    Both raise StoreUnavailable (the grant then keeps or replays nothing: it fails open)."""

    @abstractmethod
    def keep(self, key: str, sealed: bytes, ttl: int) -> Pending:
        """Keep `sealed` under `key` for `ttl` seconds. The write may still be travelling when
        this returns: the handle's `wait()` (in a finally) reads its outcome."""

    @abstractmethod
    def fetch(self, key: str, age: float) -> bytes | None:
        """What was kept under `key`, if anything; `age` is the seconds since the consuming
        rotation committed. A write kept before that commit is found, even one still travelling
        when it was committed."""


#: A write that is done: nothing to wait for.
_WRITTEN = Pending()


class WrittenGraceStore(GraceStore):
    """In memory or in the store file: `keep` has written when it returns, before the rotation
    commits, so a request that finds the token consumed finds the response at once, or never."""

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    def keep(self, key: str, sealed: bytes, ttl: int) -> Pending:
        try:
            self.store.set(key, sealed, ttl)
        except StoreUnavailable as exc:
            return Pending(error=exc)
        return _WRITTEN

    def fetch(self, key: str, age: float) -> bytes | None:
        return self.store.get(key)


class RedisGraceStore(GraceStore):
    """On Redis, two tricks that keep the refresh fast and its replay right:

    - Pipelined keep: `keep` sends the SET and returns (RedisStore.send_set); its reply is read
      on `wait()`, so the round trip overlaps the rotation's transaction.
    - Second look: the SET travels on a connection of its own, so a request that races the
      winner may find the rotation committed before Redis has applied the SET sent ahead of it.
      A response missing for a rotation at most `SECOND_LOOK_AGE` old is asked for once more,
      `SECOND_LOOK_DELAY` later; an older one was either written or never will be.
    """

    SECOND_LOOK_AGE = 1.0
    SECOND_LOOK_DELAY = 0.02

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def keep(self, key: str, sealed: bytes, ttl: int) -> Pending:
        return self.store.send_set(key, sealed, ttl)

    def fetch(self, key: str, age: float) -> bytes | None:
        sealed = self.store.get(key)
        if sealed is None and age <= self.SECOND_LOOK_AGE:
            time.sleep(self.SECOND_LOOK_DELAY)
            sealed = self.store.get(key)
        return sealed


def for_store(store: KeyValueStore) -> GraceStore:
    """The grace store on this key-value store's backend."""
    return RedisGraceStore(store) if isinstance(store, RedisStore) else WrittenGraceStore(store)
