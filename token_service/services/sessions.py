"""Sessions and their revocation: which live sessions a change reaches, and signing a customer
out everywhere or from one device."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import exists, or_, select

from ..extensions import db
from ..models import (
    RefreshToken,
    Session,
    utcnow,
)
from ..oauth2.browser import browser_session_of, end_browser_session, end_browser_sessions_of
from ..revocation import deny_session, fence_issuance, revoke_session

#: Added to the longest access-token lifetime when asking which entities a session issued
#: tokens for: a token's `iat` comes a moment after its refresh-token row's `created_at` (the
#: refresh may wait out a deny-listed second), and clocks of app nodes differ a little.
ISSUED_MARGIN_SECONDS = 60


def live_sessions(customer_ids, legal_entity_ids=None) -> list[Session]:
    """Unrevoked sessions of these customers; with `legal_entity_ids`, those whose live access
    tokens may act for one of these entities: the one the session acts for now, and any it
    issued a token for within the longest access-token lifetime (each refresh-token row
    records the entity and time of the access token issued with it)."""
    query = select(Session).where(
        Session.customer_id.in_(list(customer_ids)), Session.revoked_at.is_(None)
    )
    if legal_entity_ids is not None:
        entities = list(legal_entity_ids)
        window = current_app.config["SETTINGS"].access_token_ttl_max + ISSUED_MARGIN_SECONDS
        issued_there = exists().where(
            RefreshToken.session_id == Session.id,
            RefreshToken.legal_entity_id.in_(entities),
            RefreshToken.created_at >= utcnow() - timedelta(seconds=window),
        )
        query = query.where(or_(Session.legal_entity_id.in_(entities), issued_there))
    return list(db.session.scalars(query))


def deny_all(sessions, reason: str) -> None:
    for session in sessions:
        deny_session(session, reason)


def revoke_all_sessions(customer_id: str, reason: str, *, actor) -> int:
    """Sign a customer out everywhere: every refresh-token family is revoked (its access tokens
    stop now) and every browser session ends (its cookie signs nobody in, so `prompt=none`
    answers `login_required`). Returns how many refresh-token families were live."""
    fence_issuance([customer_id])  # before listing: a login racing this is listed or refused
    sessions = live_sessions([customer_id])
    for session in sessions:
        revoke_session(session, reason, actor_type=actor[0], actor_id=actor[1])
    end_browser_sessions_of(customer_id, reason, actor=actor)
    return len(sessions)


def revoke_one_session(session: Session, reason: str, *, actor) -> None:
    """Revoke one refresh-token family and end the browser session it was born from, if any:
    that sign-in cookie would otherwise get the device a new session with `prompt=none`."""
    revoke_session(session, reason, actor_type=actor[0], actor_id=actor[1])
    born_from = browser_session_of(session.id)
    if born_from is not None and born_from.ended_at is None:
        end_browser_session(born_from, reason, actor=actor)
