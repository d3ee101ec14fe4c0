"""OpenID Connect Back-Channel Logout 1.0: a logout token for every client that held tokens of
a session that ended, written in the transaction that ended it and POSTed after the commit.

- `enqueue(session)` (called by revocation.revoke_session, the one place a session ends): if
  the session's client has a `backchannel_logout_uri`, a signed logout token (§2.4) is added
  to `backchannel_logouts` in the current transaction. A rollback sends nothing. Only
  session-ending paths call it: a login or a refresh never reads a client's back-channel URI.
- After the commit, the worker thread of this process (`Deliverer`, one per app, started on
  demand) POSTs what is due, never the request that ended the session. A failure (anything
  but 200 or 204, §2.8; a timeout; a redirect, which is never followed) is retried with
  exponential backoff (`next_attempt_at`) up to MAX_ATTEMPTS attempts. Rows left by a process
  that stopped are sent by `token-service backchannel send` (or the next session end).
- `deliver_due()` sends what is due now, in the caller's thread: the CLI and tests call it.

Each row is claimed before its POST (its `next_attempt_at` moved on by CLAIM_SECONDS in a
short transaction that checks the value it read), so two workers never send it at once and no
lock is held while a client answers. A logout token lives LOGOUT_TOKEN_SECONDS; a retry after
that is signed again (new `iat`, `exp`, `jti`). The token is a credential: never logged.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit

from flask import Flask, current_app
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import Session as OrmSession

from . import metrics
from .extensions import db
from .models import BackchannelLogout, Client, Session, utcnow
from .security import new_token

log = logging.getLogger(__name__)

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"
#: A logout token's lifetime: "a short duration ... e.g. two minutes" is what RPs accept.
LOGOUT_TOKEN_SECONDS = 120
#: A token that would expire within this many seconds is signed again before it is sent.
RESIGN_MARGIN = 30
TIMEOUT_SECONDS = 5
MAX_ATTEMPTS = 10
#: Backoff: BACKOFF_SECONDS * 2**(attempts - 1), at most BACKOFF_MAX_SECONDS.
BACKOFF_SECONDS = 2
BACKOFF_MAX_SECONDS = 900
#: How long a claimed row waits before another worker may take it (a worker that died).
CLAIM_SECONDS = 60
#: The session-info key set when a row is enqueued: the commit then wakes the worker.
_PENDING = "backchannel_logout_pending"


def enqueue(session: Session) -> BackchannelLogout | None:
    """Add the logout token of `session` for its client, if the client has a back-channel
    logout URI, to the current transaction; delivered after the commit."""
    client = db.session.get(Client, session.client_id)
    if client is None or not client.backchannel_logout_uri:
        return None
    now = utcnow()
    row = BackchannelLogout(
        client_id=client.client_id,
        uri=client.backchannel_logout_uri,
        logout_token=logout_token(client.client_id, session.customer_id, session.id),
        created_at=now,
        next_attempt_at=now,
        attempts=0,
    )
    db.session.add(row)
    db.session().info[_PENDING] = True
    return row


def logout_token(client_id: str, subject: str, sid: str) -> str:
    """§2.4: iss, aud, iat, exp, jti, events, sub and sid; never a nonce. typ logout+jwt."""
    now = int(time.time())
    claims = {
        "iss": current_app.config["SETTINGS"].issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_SECONDS,
        "jti": new_token(),
        "events": {LOGOUT_EVENT: {}},
        "sub": subject,
        "sid": sid,
    }
    return current_app.extensions["keyring"].current.encode_jwt(claims, typ=LOGOUT_TOKEN_TYPE)


def _fresh(token: str) -> str:
    """The token itself, or, close to its expiry, the same logout signed again."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if claims["exp"] - time.time() >= RESIGN_MARGIN:
        return token
    return logout_token(claims["aud"], claims["sub"], claims["sid"])


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(BACKOFF_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS))


NOT_ALLOWED = "address not allowed"


class Refused(Exception):
    """A back-channel URI whose host is not a public address nor in an allowed network."""


def _allowed(address, settings) -> bool:
    if any(address in network for network in settings.backchannel_networks):
        return True
    if address.is_loopback:
        # As for redirect URIs: http on loopback is for development, where the issuer is too.
        return (urlsplit(settings.issuer).hostname or "") in ("localhost", "127.0.0.1", "::1")
    return address.is_global and not address.is_multicast


def vetted_address(host: str, port: int, settings) -> str:
    """The address to connect to for `host`: the first it resolves to that may be reached.

    A client's URI is a request the service makes on its behalf (server-side request forgery):
    a registrant must not reach the service's own neighbours, e.g. a cloud's metadata service
    (169.254.169.254), a database on loopback, a private network. The connection goes to the
    address vetted here, never to a second lookup that could answer otherwise (DNS rebinding).
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"cannot resolve: {exc.__class__.__name__}") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if _allowed(address, settings):
            return str(address)
    raise Refused(NOT_ALLOWED)


class _Pinned(http.client.HTTPConnection):
    """HTTP to a vetted address, with the URI's host in `Host`."""

    def __init__(self, host, port, address, **kwargs) -> None:
        super().__init__(host, port, **kwargs)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to a vetted address; the certificate is checked for the URI's host (SNI too)."""

    def __init__(self, host, port, address, **kwargs) -> None:
        super().__init__(host, port, context=ssl.create_default_context(), **kwargs)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(uri: str, token: str, settings) -> str | None:
    """POST the logout token (§2.5) to a vetted address (`vetted_address`); None on 200 or
    204, else what went wrong (never the token). A redirect is an answer, never followed."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "unsupported URI"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = vetted_address(parts.hostname, port, settings)
    except (Refused, ValueError) as exc:
        return str(exc) or exc.__class__.__name__
    kind = _PinnedTLS if parts.scheme == "https" else _Pinned
    connection = kind(parts.hostname, port, address, timeout=TIMEOUT_SECONDS)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(
            "POST",
            path,
            body=urlencode({"logout_token": token}).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cache-Control": "no-store",
            },
        )
        status = connection.getresponse().status
    except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timeout, TLS
        return exc.__class__.__name__
    finally:
        connection.close()
    return None if status in (200, 204) else f"HTTP {status}"


def _claim(row_id: int, seen: datetime | None, now: datetime) -> bool:
    claimed = db.session.execute(
        update(BackchannelLogout)
        .where(
            BackchannelLogout.id == row_id,
            BackchannelLogout.sent_at.is_(None),
            BackchannelLogout.next_attempt_at == seen,
        )
        .values(
            next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS),
            attempts=BackchannelLogout.attempts + 1,
        )
    ).rowcount
    db.session.commit()
    return bool(claimed)


def deliver_due(limit: int = 100, now: datetime | None = None) -> int:
    """POST the logout tokens that are due (at `now`), each claimed first; returns how many
    were delivered. Failures are rescheduled with backoff; nothing is raised."""
    now = now or utcnow()
    due = db.session.execute(
        select(BackchannelLogout.id, BackchannelLogout.next_attempt_at)
        .where(
            BackchannelLogout.sent_at.is_(None),
            BackchannelLogout.attempts < MAX_ATTEMPTS,
            BackchannelLogout.next_attempt_at <= now,
        )
        .order_by(BackchannelLogout.next_attempt_at, BackchannelLogout.id)
        .limit(limit)
    ).all()
    db.session.rollback()  # no transaction stays open while clients answer
    delivered = 0
    for row_id, seen in due:
        if not _claim(row_id, seen, now):
            continue  # another worker has it
        row = db.session.get(BackchannelLogout, row_id)
        token = _fresh(row.logout_token)
        uri, client_id, attempts = row.uri, row.client_id, row.attempts
        db.session.rollback()
        error = post(uri, token, current_app.config["SETTINGS"])
        values = {"logout_token": token, "last_error": error}
        if error is None:
            values["sent_at"] = utcnow()
            values["logout_token"] = ""  # delivered: not kept
            delivered += 1
            log.info("back-channel logout %s delivered to client %s", row_id, client_id)
            metrics.backchannel_logout("delivered")
        else:
            # From when it failed (a batch of slow clients takes a while), or the given `now`.
            values["next_attempt_at"] = max(now, utcnow()) + backoff(attempts)
            log.warning(
                "back-channel logout %s to client %s failed (attempt %d of %d): %s",
                row_id,
                client_id,
                attempts,
                MAX_ATTEMPTS,
                error,
            )
            metrics.backchannel_logout(
                "refused"
                if error == NOT_ALLOWED
                else "abandoned"
                if attempts >= MAX_ATTEMPTS
                else "failed"
            )
        db.session.execute(
            update(BackchannelLogout).where(BackchannelLogout.id == row_id).values(**values)
        )
        db.session.commit()
    return delivered


def next_due() -> datetime | None:
    """When the earliest pending logout token is due, or None if none is pending."""
    due = db.session.scalar(
        select(func.min(BackchannelLogout.next_attempt_at)).where(
            BackchannelLogout.sent_at.is_(None), BackchannelLogout.attempts < MAX_ATTEMPTS
        )
    )
    db.session.rollback()
    return due


class Deliverer:
    """This process's worker: one daemon thread, woken by commits that enqueued a logout,
    sleeping until the next retry is due, and gone once nothing is pending."""

    #: The longest sleep: rows added by another process are found within this time.
    IDLE_SECONDS = 30.0

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        self._wake.set()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="backchannel-logout", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                with self.app.app_context():
                    deliver_due()
                    due = next_due()
            except Exception:  # the database is down: try again later
                log.exception("back-channel logout delivery failed")
                due = utcnow() + timedelta(seconds=self.IDLE_SECONDS)
            if due is None:
                with self._lock:
                    if not self._wake.is_set():
                        self._thread = None
                        return
                continue
            wait = (due - utcnow()).total_seconds()
            self._wake.wait(min(max(wait, 0.05), self.IDLE_SECONDS))


def deliverer(app: Flask) -> Deliverer:
    extensions = app.extensions
    if "backchannel_deliverer" not in extensions:
        extensions["backchannel_deliverer"] = Deliverer(app)
    return extensions["backchannel_deliverer"]


@event.listens_for(OrmSession, "after_commit")
def _after_commit(orm_session) -> None:
    if orm_session.info.pop(_PENDING, False):
        app = current_app._get_current_object()
        if app.config.get("BACKCHANNEL_LOGOUT_THREAD", True):
            deliverer(app).kick()


@event.listens_for(OrmSession, "after_rollback")
def _after_rollback(orm_session) -> None:
    orm_session.info.pop(_PENDING, None)


def prune_done(cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` rows finished before `cutoff`: delivered, or given up on (these
    are kept until then for the admin to see `last_error`). Returns how many; not committed."""
    finished = (
        select(BackchannelLogout.id)
        .where(
            BackchannelLogout.created_at < cutoff,
            (BackchannelLogout.sent_at.is_not(None)) | (BackchannelLogout.attempts >= MAX_ATTEMPTS),
        )
        .order_by(BackchannelLogout.id)
        .limit(limit)
    )
    ids = db.session.scalars(finished).all()
    if not ids:
        return 0
    return db.session.execute(
        delete(BackchannelLogout).where(BackchannelLogout.id.in_(ids))
    ).rowcount
