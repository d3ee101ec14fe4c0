"""Deny-list entries the store refused while it was down, written once it answers again.

Admin changes and revocations commit to the database whatever the store's state; what they
could not write to the deny-list waits here (revocation._announce puts it), so that resource
servers reading the deny-list or following the revocation channel get it after an outage.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time

from .kv import REVOCATION_CHANNEL, KeyValueStore, StoreUnavailable

log = logging.getLogger(__name__)


class Outbox:
    """Deny-list entries the store refused, written (and published) again once it answers,
    retried every second by a thread of this process until each would have expired.

    A `deny:sid` entry is written only if the store does not hold a newer cut-off already
    (another worker may have written one meanwhile). The queue lives in this process: if it
    restarts first, the entries are lost, and only the database (which introspection and the
    token endpoint consult) still refuses those tokens until they expire.
    """

    RETRY_SECONDS = 1.0

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store
        self._pending: dict[str, tuple[bytes, float, dict]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, key: str, value: bytes, ttl: int, message: dict) -> None:
        with self._lock:
            self._pending[key] = (value, time.time() + ttl, message)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._retry, name="deny-list-outbox", daemon=True
                )
                self._thread.start()

    def discard(self, key: str) -> None:
        if self._pending:
            with self._lock:
                self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write what is queued; returns how many entries are still waiting for the store."""
        with self._lock:
            queued = list(self._pending.items())
        written = 0
        for key, item in queued:
            value, deadline, message = item
            remaining = math.ceil(deadline - time.time())
            try:
                if remaining > 0 and not self._superseded(key, value):
                    payload = json.dumps(message, separators=(",", ":"))
                    self.store.set_and_publish(key, value, remaining, REVOCATION_CHANNEL, payload)
                    written += 1
            except StoreUnavailable:
                break
            with self._lock:
                if self._pending.get(key) is item:
                    del self._pending[key]
        if written:
            log.warning("store available again: %d queued deny-list entries written", written)
        return len(self._pending)

    def _superseded(self, key: str, value: bytes) -> bool:
        if not key.startswith("deny:sid:"):
            return False
        current = self.store.get(key)
        return current is not None and int(current) >= int(value)

    def _retry(self) -> None:
        while True:
            time.sleep(self.RETRY_SECONDS)
            self.flush()
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
