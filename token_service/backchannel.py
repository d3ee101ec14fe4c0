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
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit

from flask import Flask, current_app
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import Session as OrmSession

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a 3xx is the answer, and a failure


_opener = urllib.request.build_opener(_NoRedirect)


def post(uri: str, token: str) -> str | None:
    """POST the logout token (§2.5); None on 200 or 204, else what went wrong (no token)."""
    if urlsplit(uri).scheme not in ("http", "https"):
        return "unsupported URI scheme"
    request = urllib.request.Request(  # noqa: S310 (http or https only, checked above)
        uri,
        data=urlencode({"logout_token": token}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cache-Control": "no-store"},
        method="POST",
    )
    try:
        with _opener.open(request, timeout=TIMEOUT_SECONDS) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except urllib.error.URLError as exc:  # what stopped it: refused, a timeout, DNS
        reason = exc.reason
        return reason.__class__.__name__ if isinstance(reason, BaseException) else "URLError"
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return exc.__class__.__name__
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
        error = post(uri, token)
        values = {"logout_token": token, "last_error": error}
        if error is None:
            values["sent_at"] = utcnow()
            values["logout_token"] = ""  # delivered: not kept
            delivered += 1
            log.info("back-channel logout %s delivered to client %s", row_id, client_id)
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
