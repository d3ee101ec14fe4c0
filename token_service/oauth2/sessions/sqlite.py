"""The session store on SQLite, the embedded default: plain SQL on sqlite3 connections.

Every operation runs on the request slot's own sqlite3 connection (connections.py), without
SQLAlchemy's session, whose begin, commit and pool return cost a refresh more than its
statements do. A write takes SQLite's write lock at its BEGIN (BEGIN IMMEDIATE), so concurrent
refreshes queue instead of failing, and commits before it returns: a rotation's statements
(consume, insert, move, audit) commit together or not at all, and of concurrent rotations of
one token the first consumes it and the others find it consumed. The entitlements-version
check (package docstring) holds too.

One exception: when the request's ORM session is inside a transaction already (a client's row
read on a cache miss), that transaction holds the write lock from its first statement
(database.py), and a second connection of the same request would wait for it until the busy
timeout; the write then runs on the ORM's connection, committed with it.

Reads run outside any transaction (WAL readers never wait for the writer), so a refresh holds
the write lock only while it writes. A driver error comes out as SQLAlchemy's, which the front
answers with a 503. Times are stored the way SQLAlchemy stores them, so the ORM reads these
rows unchanged.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson
from sqlalchemy.exc import DBAPIError

from ... import audit
from ...entitlements import Entitlements, from_rows, rows_sql
from ...extensions import db
from .base import AUDIT_COLUMNS, SessionStore, session_event
from .connections import Held, SlotConnections
from .rows import LoginRow, NewSession, RefreshRow, Rotation, SessionState, Superseded


@contextmanager
def _driver_errors():
    """sqlite3's errors as SQLAlchemy's, as the ORM would raise them (the front's 503)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc


class SqliteSessions(SessionStore):
    def __init__(self) -> None:
        self._connections = SlotConnections(Held)  # autocommit: database.configure_engine

    @contextmanager
    def _transaction(self):
        """A write transaction, committed on the way out, rolled back on any error."""
        if db.session.registry.has() and db.session.registry().in_transaction():
            with _driver_errors():
                try:
                    yield db.session.connection().connection.driver_connection
                except BaseException:
                    db.session.rollback()
                    raise
                db.session.commit()
            return
        with _driver_errors():
            conn = self._connections.get().conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @contextmanager
    def _reading(self):
        """This thread's connection for reads, each statement on the last committed state (no
        transaction: a change committing between a row and its entitlements moves the version
        read with the row, so the write that follows refuses, and the grant reads again)."""
        with _driver_errors():
            yield self._connections.get().conn

    def _login(self, by: str, key: str) -> tuple[LoginRow, Entitlements] | None:
        with self._reading() as conn:
            row = conn.execute(_LOGIN[by], (key,)).fetchone()
            return None if row is None else (LoginRow(*row), _entitlements(conn, row[0]))

    def start_session(
        self, session: NewSession, token_hash: str, entitlements_version: int
    ) -> None:
        event = session_event(session)
        s = session._replace(**{k: _to_sqlite(v) for k, v in session._asdict().items()})
        with self._transaction() as conn:
            inserted = conn.execute(
                _INSERT_SESSION,
                (*s[:7], s.created_at, *s[7:], s.customer_id, entitlements_version),
            )
            if inserted.rowcount != 1:
                raise Superseded
            conn.execute(_INSERT_TOKEN, (token_hash, s.id, s.legal_entity_id, s.created_at))
            _insert_audit(conn, event)
        audit.emit(event)

    def load_refresh(self, token_hash: str) -> tuple[RefreshRow, Entitlements] | None:
        with self._reading() as conn:
            row = conn.execute(_LOAD_REFRESH, (token_hash,)).fetchone()
            if row is None:
                return None
            found = RefreshRow(*(_from_sqlite(v) if i in _TIMES else v for i, v in enumerate(row)))
            return found, _entitlements(conn, found.customer_id)

    def rotate(self, rotation: Rotation) -> bool:
        now = _to_sqlite(rotation.now)
        event = session_event(rotation) if rotation.switched else None
        with self._transaction() as conn:
            consumed = conn.execute(
                _CONSUME,
                (
                    now,
                    rotation.new_hash,
                    rotation.old_hash,
                    rotation.customer_id,
                    rotation.entitlements_version,
                ),
            ).rowcount
            if not consumed:
                version = conn.execute(_VERSION, (rotation.customer_id,)).fetchone()
                if version is None or version[0] != rotation.entitlements_version:
                    raise Superseded
                return False
            conn.execute(
                _INSERT_TOKEN,
                (rotation.new_hash, rotation.session_id, rotation.legal_entity_id, now),
            )
            conn.execute(
                _MOVE_SESSION,
                (
                    rotation.legal_entity_id,
                    now,
                    _to_sqlite(rotation.idle_expires_at),
                    rotation.session_id,
                ),
            )
            if event is not None:
                _insert_audit(conn, event)
        if event is not None:
            audit.emit(event)
        return True

    def session_state(self, sid: str, legal_entity_id: str | None) -> SessionState | None:
        with self._reading() as conn:
            row = conn.execute(_SESSION_STATE, (legal_entity_id, legal_entity_id, sid)).fetchone()
        if row is None:
            return None
        return SessionState(*(_from_sqlite(v) if i < 3 else v for i, v in enumerate(row)))


def _entitlements(conn, customer_id: str) -> Entitlements:
    return from_rows(conn.execute(_ENTITLEMENTS, {"customer_id": customer_id}).fetchall())


def _insert_audit(conn, event: dict) -> None:
    values = [_to_sqlite(event[name]) for name in AUDIT_COLUMNS[:-1]]
    conn.execute(_INSERT_AUDIT, (*values, orjson.dumps(event["details"]).decode()))


def _to_sqlite(value):
    """SQLAlchemy's storage format for DateTime on SQLite, "%Y-%m-%d %H:%M:%S.%f" (the UTC
    offset cut off): isoformat makes it in a third of strftime's time."""
    return value.isoformat(" ", "microseconds")[:26] if isinstance(value, datetime) else value


def _from_sqlite(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


_TIME_FIELDS = ("created_at", "consumed_at", "auth_time", "expires_at", "idle_expires_at")
_TIMES = frozenset(RefreshRow._fields.index(name) for name in (*_TIME_FIELDS, "revoked_at"))

_ENTITLEMENTS = rows_sql(":customer_id")
_LOGIN = {
    by: f"""
        SELECT id, email, password_hash, status, default_legal_entity_id, entitlements_version
        FROM customers WHERE {by} = ?
    """  # noqa: S608 - constant SQL
    for by in ("email", "id")
}
# The entitlements-version check, here and in _CONSUME. The transaction holds SQLite's write
# lock from its first statement, so a change cannot come between this read and the write; the
# check keeps the rule true across the operations of one grant.
_CURRENT = "EXISTS (SELECT 1 FROM customers WHERE id = ? AND entitlements_version = ?)"
_INSERT_SESSION = f"""
    INSERT INTO sessions (id, customer_id, client_id, scope, legal_entity_id, auth_time,
                          created_at, last_used_at, expires_at, idle_expires_at)
    SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE {_CURRENT}
"""
_INSERT_TOKEN = """
    INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
    VALUES (?, ?, ?, ?)
"""
_INSERT_AUDIT = f"""
    INSERT INTO audit_events ({", ".join(AUDIT_COLUMNS)})
    VALUES ({", ".join("?" * len(AUDIT_COLUMNS))})
"""  # noqa: S608 - constant SQL
_LOAD_REFRESH = """
    SELECT rt.token_hash, rt.created_at, rt.consumed_at, rt.successor_hash, s.id, s.client_id,
           s.customer_id, s.scope, s.legal_entity_id, s.auth_time, s.expires_at,
           s.idle_expires_at, s.revoked_at, s.tokens_not_before, c.status,
           c.entitlements_version
    FROM refresh_tokens rt
    JOIN sessions s ON s.id = rt.session_id
    JOIN customers c ON c.id = s.customer_id
    WHERE rt.token_hash = ?
"""
_VERSION = "SELECT entitlements_version FROM customers WHERE id = ?"
_CONSUME = f"""
    UPDATE refresh_tokens SET consumed_at = ?, successor_hash = ?
    WHERE token_hash = ? AND consumed_at IS NULL AND {_CURRENT}
"""  # noqa: S608 - constant SQL
_MOVE_SESSION = """
    UPDATE sessions SET legal_entity_id = ?, last_used_at = ?, idle_expires_at = ? WHERE id = ?
"""
_SESSION_STATE = """
    SELECT s.revoked_at, s.expires_at, s.idle_expires_at, s.tokens_not_before, c.status,
           ? IS NULL OR EXISTS (
               SELECT 1 FROM assignments a
               WHERE a.customer_id = s.customer_id AND a.legal_entity_id = ?)
    FROM sessions s JOIN customers c ON c.id = s.customer_id
    WHERE s.id = ?
"""
