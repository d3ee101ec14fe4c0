"""Authorization codes (RFC 6749 §4.1.2, §10.5): stored as a hash, consumed once.

The two functions the grants call, `store_code` and `consume_code`, are the whole storage
interface (SQLAlchemy Core, the same statements on both backends); they will move behind the
session store's protocol with the other hot statements.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, insert, select, update

from ..extensions import db
from ..models import AuthorizationCode, Session, utcnow
from ..security import hash_token, new_token

#: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED" (§4.1.2); a browser
#: redirect and a back-channel exchange take a second or two, so one minute is plenty.
CODE_SECONDS = 60


class CodeRow(NamedTuple):
    client_id: str
    redirect_uri: str
    code_challenge: str
    customer_id: str
    browser_session_id: str | None
    scope: str
    legal_entity_id: str | None
    nonce: str | None
    auth_time: datetime
    expires_at: datetime
    session_id: str | None


_COLUMNS = [getattr(AuthorizationCode, name) for name in CodeRow._fields]


def store_code(
    *,
    client_id: str,
    redirect_uri: str,
    code_challenge: str,
    customer_id: str,
    browser_session_id: str | None,
    scope: str,
    legal_entity_id: str | None,
    nonce: str | None,
    auth_time: datetime,
) -> str:
    """Store a new code's hash and what it is bound to; returns the code (shown once)."""
    code = new_token()
    now = utcnow()
    db.session.execute(
        insert(AuthorizationCode).values(
            code_hash=hash_token(code),
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            customer_id=customer_id,
            browser_session_id=browser_session_id,
            scope=scope,
            legal_entity_id=legal_entity_id,
            nonce=nonce,
            auth_time=auth_time,
            created_at=now,
            expires_at=now + timedelta(seconds=CODE_SECONDS),
        )
    )
    return code


def consume_code(code: str, session_id: str, now: datetime) -> tuple[CodeRow | None, bool]:
    """Consume a code at most once: one UPDATE ... WHERE consumed_at IS NULL decides between
    concurrent exchanges. It records `session_id`, the family about to be issued from it.

    Returns (the code's row, True) to the one caller that consumed it; (the row, False) for a
    code consumed before (a replay: its `session_id` is the family to revoke); (None, False)
    for an unknown code.
    """
    code_hash = hash_token(code)
    row = db.session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.code_hash == code_hash, AuthorizationCode.consumed_at.is_(None))
        .values(consumed_at=now, session_id=session_id)
        .returning(*_COLUMNS)
    ).first()
    if row is not None:
        return CodeRow(*row), True
    row = db.session.execute(
        select(*_COLUMNS).where(AuthorizationCode.code_hash == code_hash)
    ).first()
    return (CodeRow(*row) if row else None), False


def sessions_born_from(browser_session_id: str) -> list[str]:
    """The refresh-token families issued from codes of one browser session."""
    return list(
        db.session.scalars(
            select(AuthorizationCode.session_id).where(
                AuthorizationCode.browser_session_id == browser_session_id,
                AuthorizationCode.session_id.is_not(None),
            )
        )
    )


def browser_session_of_family(session_id: str) -> str | None:
    """The browser session whose code started the refresh-token family `session_id`."""
    return db.session.scalar(
        select(AuthorizationCode.browser_session_id).where(
            AuthorizationCode.session_id == session_id
        )
    )


def prune_dead_codes(cutoff: datetime, limit: int) -> int:
    """Delete up to `limit` codes expired before `cutoff` whose session is gone or never
    began (while its session lives, a code's row is how logout and replay detection find it)."""
    hashes = db.session.scalars(
        select(AuthorizationCode.code_hash)
        .outerjoin(Session, Session.id == AuthorizationCode.session_id)
        .where(AuthorizationCode.expires_at < cutoff, Session.id.is_(None))
        .order_by(AuthorizationCode.expires_at)
        .limit(limit)
    ).all()
    if not hashes:
        return 0
    return db.session.execute(
        delete(AuthorizationCode).where(AuthorizationCode.code_hash.in_(hashes))
    ).rowcount
