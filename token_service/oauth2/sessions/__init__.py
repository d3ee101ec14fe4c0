"""The session store: every read and write the protocol code makes, behind one interface.

The grants, introspection and the login check hold a `SessionStore` (injected, as the key ring
is) and reach storage through it only. There is one implementation per backend:

- `postgres.PostgresSessions`: psycopg prepared statements on the request slot's own
  connection (connections.py) in autocommit. A write is one statement, so it is atomic on its
  own and spends no BEGIN/COMMIT round trips; of concurrent rotations of one token exactly one
  consumes it (the row lock).
- `sqlite.SqliteSessions`: the same writes on sqlite3, on the slot's own connection, in a
  transaction that takes the write lock at its BEGIN IMMEDIATE and that the operation commits
  before it returns (on the ORM session's connection instead when that one is in a
  transaction, and so holds SQLite's one write lock, already); reads outside any transaction
  (WAL readers never wait).

Both writes that issue tokens (a new session, a rotation) happen only if the customer's
`entitlements_version` is still the one read with the entitlements: a permission change bumps
it before it lists the sessions to deny (revocation.fence_issuance), so a token made from data
older than the change is either in a session the change finds, or never issued (the write
raises `Superseded`, having written nothing, and the grant reads again).

The interface is `base.SessionStore`: its abstract methods are the backends' hot statements,
the rest (clients, codes, revoking a family, audit events, the deny-list) is off the hot paths
and shared, on the ORM session. Each operation owns its transaction: when it returns, what it
wrote is committed. Audit rows are made by `audit.row` whichever statement writes them.
tests/test_session_store.py holds every implementation to the same contract.
"""

from __future__ import annotations

from .base import SessionStore
from .rows import (
    CodeRow,
    LoginRow,
    NewCode,
    NewSession,
    RefreshRow,
    Rotation,
    SessionState,
    Superseded,
    refusal,
)

__all__ = [
    "CodeRow",
    "LoginRow",
    "NewCode",
    "NewSession",
    "RefreshRow",
    "Rotation",
    "SessionState",
    "SessionStore",
    "Superseded",
    "for_database",
    "refusal",
]


def for_database(url: str) -> SessionStore:
    """The implementation for a database URL."""
    if url.startswith("postgresql"):
        from .postgres import PostgresSessions

        return PostgresSessions()
    from .sqlite import SqliteSessions

    return SqliteSessions()
