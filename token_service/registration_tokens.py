"""Initial access tokens (RFC 7591 §3) and registration access tokens (RFC 7592): made,
stored as SHA-256 hashes, checked in constant time. Used by the admin API, the CLI and
api/registration.py."""

from __future__ import annotations

import hmac
from datetime import timedelta

from sqlalchemy import select, update

from .extensions import db
from .inputs import text_problem
from .models import Client, InitialAccessToken, new_id, utcnow
from .security import hash_token, new_token

DEFAULT_EXPIRES_IN = 86400
MAX_EXPIRES_IN = 366 * 86400
MAX_USES = 10000


def create(expires_in: int, uses: int, *, created_by: str | None) -> tuple[InitialAccessToken, str]:
    """A new initial access token and its value (shown once)."""
    if not 1 <= expires_in <= MAX_EXPIRES_IN or not 1 <= uses <= MAX_USES:
        raise ValueError(f"expires_in 1..{MAX_EXPIRES_IN}, uses 1..{MAX_USES}")
    token = new_token()
    row = InitialAccessToken(
        id=new_id("iat"),
        token_hash=hash_token(token),
        expires_at=utcnow() + timedelta(seconds=expires_in),
        uses_left=uses,
        created_by=created_by,
    )
    db.session.add(row)
    db.session.flush()
    return row, token


def usable(token: str) -> bool:
    """The token exists, has not expired and has a use left (read only)."""
    row = db.session.scalar(
        select(InitialAccessToken).where(InitialAccessToken.token_hash == hash_token(token))
    )
    return row is not None and row.uses_left > 0 and row.expires_at > utcnow()


def use(token: str) -> bool:
    """Spend one use, atomically: of two concurrent registrations with one use left, exactly
    one gets True (a conditional UPDATE; PostgreSQL re-checks it after the other commits)."""
    result = db.session.execute(
        update(InitialAccessToken)
        .where(
            InitialAccessToken.token_hash == hash_token(token),
            InitialAccessToken.uses_left > 0,
            InitialAccessToken.expires_at > utcnow(),
        )
        .values(uses_left=InitialAccessToken.uses_left - 1)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def client_for(client_id: str, token: str, *, lock: bool = False) -> Client | None:
    """The dynamically registered client whose registration access token this is, or None
    (no such client, none registered so, or another token); compared as hashes."""
    if not token or len(client_id) > 128 or text_problem(client_id) or text_problem(token):
        return None
    client = db.session.get(Client, client_id, with_for_update=lock)
    stored = client.registration_access_token_hash if client is not None else None
    if stored is None or not hmac.compare_digest(stored, hash_token(token)):
        return None
    return client
