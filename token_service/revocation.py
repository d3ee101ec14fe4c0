"""Revoking sessions and access tokens: the database row, the deny-list, the announcement.

Deny-list entries in the store, each kept as long as the longest access token can live:
- `deny:sid:<sid>` = a unix time T: every access token of that session with `iat` < T is
  revoked. Tokens issued later (after a permission change, at the next refresh) are not, so one
  key serves both a revoked session (which gets no new tokens) and a changed one.
- `deny:jti:<jti>` = "1": that one access token is revoked.

Every entry is also published on REVOCATION_CHANNEL as JSON, for resource servers that follow:
`{"type": "sid" | "jti", "value": "...", "not_before": T (sid only), "exp": <unix time after
which the entry can be forgotten>, "reason": "..."}`.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from flask import current_app, g
from sqlalchemy import select, update

from . import audit, backchannel, metrics
from .expiring import ExpiringMap
from .extensions import db
from .kv import REVOCATION_CHANNEL, KeyValueStore, StoreUnavailable
from .models import Customer, Session, utcnow
from .outbox import Outbox

log = logging.getLogger(__name__)


def _store():
    return current_app.extensions["token_store"]


def _announce(kind: str, value: str, ttl: int, reason: str, stored: bytes, **extra) -> bool:
    """Write a deny-list entry and publish it, both or neither; False if the store is down."""
    message = {"type": kind, "value": value, **extra, "exp": int(time.time()) + ttl}
    message["reason"] = reason
    try:
        _store().set_and_publish(
            f"deny:{kind}:{value}",
            stored,
            ttl,
            REVOCATION_CHANNEL,
            json.dumps(message, separators=(",", ":")),
        )
    except StoreUnavailable:
        # The database stays the source of truth for sessions (introspection of access tokens
        # fails closed while the store is down); resource servers that read the deny-list get
        # the entry once the store is back.
        log.error("store unavailable: %s deny-list entry queued", kind)
        _outbox().add(f"deny:{kind}:{value}", stored, ttl, message)
        g.deny_list_queued = True  # the admin API says so in its answer
        return False
    _outbox().discard(f"deny:{kind}:{value}")  # this newer entry supersedes a queued one
    return True


def fence_issuance(customer_ids) -> None:
    """Order this transaction against the token endpoint for these customers: call it first,
    before listing their sessions, in every change that denies their tokens.

    The token endpoint reads a customer's entitlements with `entitlements_version` and writes
    the new session or rotation only if the version is unchanged, holding the customer's row
    (FOR SHARE on PostgreSQL) while it writes. This bump locks the row until commit, so each
    issuance either committed before it (and the listing that follows sees its session) or
    finds the version moved and reads again, seeing this change. SQLite gets the same order
    from BEGIN IMMEDIATE; the check holds there as well.
    """
    ids = set(customer_ids)
    if not ids:
        return
    if len(ids) > 1:
        # Several rows are locked in id order, so two changes over the same customers cannot
        # deadlock (a plain UPDATE locks them in whatever order its scan finds them). NO KEY
        # UPDATE, as the UPDATE takes: new rows referring to a customer still go ahead.
        db.session.execute(
            select(Customer.id)
            .where(Customer.id.in_(ids))
            .order_by(Customer.id)
            .with_for_update(key_share=True)
        ).all()
    db.session.execute(
        update(Customer)
        .where(Customer.id.in_(ids))
        .values(entitlements_version=Customer.entitlements_version + 1)
    )


def _outbox() -> Outbox:
    extensions = current_app.extensions
    if "deny_list_outbox" not in extensions:
        extensions["deny_list_outbox"] = Outbox(extensions["token_store"])
    return extensions["deny_list_outbox"]


def deny_session(session: Session, reason: str) -> bool:
    """Revoke every access token issued so far in `session` (not those issued later)."""
    # iat has one-second resolution: deny the whole current second, so that no token issued
    # before this call survives. The session row remembers it, and the token endpoint waits
    # out the rest of the second before it issues this session's next token.
    not_before = int(time.time()) + 1
    session.tokens_not_before = not_before
    ttl = current_app.config["SETTINGS"].access_token_ttl_max + 1
    stored = str(not_before).encode()
    return _announce("sid", session.id, ttl, reason, stored, not_before=not_before)


def deny_access_token(jti: str, ttl: int, reason: str) -> bool:
    """Revoke one access token until it expires."""
    if ttl > 0 and not _announce("jti", jti, ttl, reason, b"1"):
        return False
    metrics.revoked("access_token", reason)
    return True


def is_denied(sid: str | None, jti: str, iat: int) -> bool:
    """True if this access token was revoked. Raises StoreUnavailable: callers fail closed."""
    keys = [f"deny:jti:{jti}"] if sid is None else [f"deny:jti:{jti}", f"deny:sid:{sid}"]
    values = current_app.extensions["deny_list"].get_many(keys)
    if values[0] is not None:
        return True
    return sid is not None and values[1] is not None and iat < int(values[1])


def revoke_session(session: Session, reason: str, *, actor_type: str, actor_id: str | None) -> None:
    """Revoke a refresh-token family in the current transaction and deny-list its tokens."""
    # Before the session row is touched: a rotation holds the customer's row, then the session's.
    fence_issuance([session.customer_id])
    if session.revoked_at is None:
        session.revoked_at = utcnow()
        session.revoked_reason = reason
        metrics.revoked("session", reason)
        audit.record(
            "session.revoked",
            actor_type=actor_type,
            actor_id=actor_id,
            customer_id=session.customer_id,
            target=session.id,
            reason=reason,
        )
        # OpenID Connect Back-Channel Logout: in this transaction, sent after its commit.
        backchannel.enqueue(session)
    deny_session(session, reason)


_MISSING = object()


class DenyList:
    """The deny-list as introspection reads it: from the store, or from this process's copy of
    what it read there before, kept exact by the revocation channel.

    Every write to the deny-list is published in the same MULTI (`_announce`), and Redis queues
    a published message on every subscriber's connection before it answers the publisher. So
    once a revocation has been answered, its message already waits on this process's
    subscription (or is on the wire to another host, ahead of anything the revoking caller does
    next), and reading what waits there before answering from the copy shows the revocation at
    once, as asking the store would. While the subscription is not live (starting, failed, or
    silent: see kv.Subscription) every answer comes from the store and nothing is copied.
    The in-process store has no subscription and is read directly: it is memory already.
    """

    #: A bound on how long a copied entry is used, should a message ever go missing anyway.
    KEEP_SECONDS = 60.0

    def __init__(self, store: KeyValueStore, max_entries: int = 50_000) -> None:
        self.store = store
        self.subscription = store.subscribe(REVOCATION_CHANNEL)
        self._copy = ExpiringMap(maxsize=max_entries, ttl=self.KEEP_SECONDS)
        self._generation = None
        # Messages and subscriptions seen so far: a store read that overlapped one of them may
        # be older than what it announced, and is not copied.
        self._changes = 0
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        if self.subscription is None:
            return self.store.get_many(keys)
        with self._lock:
            live = self._catch_up()
            if live:
                copied = [self._copy.get(key, _MISSING) for key in keys]
                if _MISSING not in copied:
                    return copied
            changes = self._changes
        values = self.store.get_many(keys)
        with self._lock:
            if live and self._changes == changes and self.subscription.live:
                for key, value in zip(keys, values, strict=True):
                    self._copy.put(key, value)
        return values

    def _catch_up(self) -> bool:
        """Apply what arrived on the channel; True if the copy may answer."""
        subscription = self.subscription
        for message in subscription.poll():
            self._changes += 1
            try:
                change = json.loads(message)
                self._copy.pop(f"deny:{change['type']}:{change['value']}")
            except (ValueError, KeyError, TypeError):
                self._copy.clear()  # not ours to read: forget everything rather than guess
        if subscription.generation != self._generation or not subscription.live:
            self._copy.clear()
            self._changes += 1
            self._generation = subscription.generation
        metrics.deny_list_copy(subscription.live)
        return subscription.live
