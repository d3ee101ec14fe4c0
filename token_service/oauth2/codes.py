"""What the hosted login and maintenance ask of authorization codes besides their exchange
(issuing and consuming a code are the session store's: oauth2/sessions): the families born
from a browser session's codes, and pruning."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from ..extensions import db
from ..models import AuthorizationCode, Session


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
