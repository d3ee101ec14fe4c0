"""Browser sessions (SSO at the hosted login page) and consents: the state the front door keeps
between requests. The cookie holds a random token; only its hash is stored."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update

from .. import audit
from ..extensions import db
from ..models import BrowserSession, Consent, Customer, Session, new_id, utcnow
from ..revocation import revoke_session
from ..security import hash_token, new_token
from . import codes

#: How long a sign-in at the login page is reused for further authorization requests.
BROWSER_SESSION_SECONDS = 12 * 3600


def start_browser_session(customer_id: str, client_id: str) -> tuple[BrowserSession, str]:
    """Record a sign-in; returns the row and the cookie's value (shown once)."""
    # Held until commit: a revocation of all the customer's sessions (which updates this row
    # first, sessions.revoke_all_sessions) either waits for this sign-in and ends it, or
    # committed before it and this is a new sign-in after it (PostgreSQL: FOR SHARE; SQLite
    # gets the same order from its one writer).
    db.session.execute(
        select(Customer.id).where(Customer.id == customer_id).with_for_update(read=True)
    ).all()
    token = new_token()
    now = utcnow()
    row = BrowserSession(
        id=new_id("bs"),
        cookie_hash=hash_token(token),
        customer_id=customer_id,
        auth_time=now,
        created_at=now,
        expires_at=now + timedelta(seconds=BROWSER_SESSION_SECONDS),
    )
    db.session.add(row)
    audit.record(
        "browser_session.started",
        actor_type="customer",
        actor_id=customer_id,
        customer_id=customer_id,
        target=row.id,
        client_id=client_id,
    )
    db.session.flush()
    return row, token


def find_browser_session(cookie: str | None, now: datetime) -> BrowserSession | None:
    """The live browser session behind a cookie, if any."""
    if not cookie or len(cookie) > 256:
        return None
    row = db.session.scalars(
        select(BrowserSession).where(BrowserSession.cookie_hash == hash_token(cookie))
    ).first()
    if row is None or row.ended_at is not None or now >= row.expires_at:
        return None
    return row


def end_browser_session(
    row: BrowserSession, reason: str, *, actor: tuple[str, str | None] | None = None
) -> list[str]:
    """End a browser session and revoke the refresh-token families born from it (their access
    tokens are deny-listed at once); returns the revoked session ids. The actor is the
    customer (a sign-out) unless given."""
    actor_type, actor_id = actor or ("customer", row.customer_id)
    ended = db.session.execute(
        update(BrowserSession)
        .where(BrowserSession.id == row.id, BrowserSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    ).rowcount
    revoked = []
    for sid in codes.sessions_born_from(row.id):
        session = db.session.get(Session, sid)
        if session is not None and session.revoked_at is None:
            revoke_session(session, reason, actor_type=actor_type, actor_id=actor_id)
            revoked.append(sid)
    if ended:
        audit.record(
            "browser_session.ended",
            actor_type=actor_type,
            actor_id=actor_id,
            customer_id=row.customer_id,
            target=row.id,
            reason=reason,
            revoked_sessions=len(revoked),
        )
    return revoked


def end_browser_sessions_of(customer_id: str, reason: str, *, actor: tuple[str, str | None]) -> int:
    """End every live browser session of a customer, so that no cookie signs them in again
    (the next `prompt=none` answers `login_required`); returns how many were live."""
    rows = list(
        db.session.scalars(
            select(BrowserSession).where(
                BrowserSession.customer_id == customer_id,
                BrowserSession.ended_at.is_(None),
                BrowserSession.expires_at > utcnow(),
            )
        )
    )
    for row in rows:
        end_browser_session(row, reason, actor=actor)
    return len(rows)


def browser_session_of(sid: str) -> BrowserSession | None:
    """The browser session a refresh-token family was born from (through its code)."""
    from_code = codes.browser_session_of_family(sid)
    return db.session.get(BrowserSession, from_code) if from_code else None


def has_consent(customer_id: str, client_id: str, scope: str) -> bool:
    return db.session.get(Consent, (customer_id, client_id, scope)) is not None


def record_consent(customer_id: str, client_id: str, scope: str) -> None:
    """Remember a consent for this client and this exact scope set."""
    if not has_consent(customer_id, client_id, scope):
        db.session.add(Consent(customer_id=customer_id, client_id=client_id, scope=scope))
        audit.record(
            "consent.granted",
            actor_type="customer",
            actor_id=customer_id,
            customer_id=customer_id,
            target=client_id,
            scope=scope,
        )


def prune_dead_browser_sessions(cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` browser sessions that expired or ended before `cutoff`."""
    ids = db.session.scalars(
        select(BrowserSession.id)
        .where(or_(BrowserSession.expires_at < cutoff, BrowserSession.ended_at < cutoff))
        .limit(limit)
    ).all()
    if not ids:
        return 0
    return db.session.execute(delete(BrowserSession).where(BrowserSession.id.in_(ids))).rowcount
