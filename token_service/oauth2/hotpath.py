"""The statements of the hot paths (password login, refresh, introspection), as plain SQL on
the database driver: SQLAlchemy's statement layer cost more than the statements themselves.

PostgreSQL: psycopg with server-side prepared statements, on a pooled connection in autocommit.
A login is one read and one write, a refresh one read (the token, its session, the customer and
the entitlements, as two arrays) and one write: a single statement consumes the presented
token, inserts its successor, moves the session and (on a switch) writes the audit event. A
single statement is atomic, so of concurrent refreshes exactly one consumes the token (the row
lock decides), and no BEGIN/COMMIT round trips are spent.

Both writes (a new session, a rotation) happen only if the customer's `entitlements_version` is
still the one read with the entitlements, and on PostgreSQL hold the customer's row FOR SHARE
while they write: a permission change bumps the version with the row locked before it lists the
sessions to deny (revocation.fence_issuance), so a token made from data older than the change
is either in a session the change finds or never issued (the write does nothing, and the grant
reads again). One more primary-key lookup in a statement that runs anyway.

SQLite: the same steps on the sqlite3 connection of the request's transaction, which holds the
write lock from its first statement (BEGIN IMMEDIATE, see database.py); the caller commits.

Columns are those of models.py; the migrations are the schema's single source.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import NamedTuple

import psycopg
from sqlalchemy.exc import DBAPIError

from ..extensions import db
from ..scopes import GroupGrant
from .storage import Entitlements, by_name


class Superseded(Exception):
    """The customer's entitlements changed between a grant's read and its write, which wrote
    nothing: the grant runs again on the changed data."""


class RefreshRow(NamedTuple):
    token_hash: str
    consumed_at: datetime | None
    successor_hash: str | None
    session_id: str
    client_id: str
    customer_id: str
    scope: str
    legal_entity_id: str | None
    auth_time: datetime
    expires_at: datetime
    idle_expires_at: datetime
    revoked_at: datetime | None
    tokens_not_before: int | None
    customer_status: str
    entitlements_version: int  # the customer's, read with the entitlements


class LoginRow(NamedTuple):
    id: str
    password_hash: str | None
    status: str
    default_legal_entity_id: str | None
    entitlements_version: int  # read with the entitlements


class SessionState(NamedTuple):
    revoked_at: datetime | None
    expires_at: datetime
    idle_expires_at: datetime
    tokens_not_before: int | None
    customer_status: str
    assigned: bool  # to the entity asked about (True when none was asked)


class Rotation(NamedTuple):
    old_hash: str
    new_hash: str
    customer_id: str
    legal_entity_id: str | None
    previous_entity: str | None
    now: datetime
    idle_expires_at: datetime
    entitlements_version: int  # as read with the entitlements the new token was made from

    @property
    def switched(self) -> bool:
        return self.legal_entity_id != self.previous_entity

    @property
    def details(self) -> dict:
        return {"previous": self.previous_entity, "legal_entity_id": self.legal_entity_id}

    def audit_event(self, session_id: str) -> dict:
        return {
            "at": self.now,
            "actor_type": "customer",
            "actor_id": self.customer_id,
            "action": "session.switched",
            "customer_id": self.customer_id,
            "target": session_id,
            "legal_entity_id": self.legal_entity_id,
            "details": self.details,
        }


def _entitlements(entities: list[list[str]], grants: list[list[str]]) -> Entitlements:
    """From the two arrays of the PostgreSQL reads: [[id, name]] and [[entity, scope]]."""
    return Entitlements(
        sorted(({"id": a, "name": b} for a, b in entities), key=by_name),
        [GroupGrant(a, b) for a, b in grants],
    )


def _first_token(session: dict, token_hash: str) -> dict:
    return {
        "token_hash": token_hash,
        "session_id": session["id"],
        "legal_entity_id": session["legal_entity_id"],
        "created_at": session["created_at"],
    }


@contextmanager
def begin():
    """The hot statements of one request. On PostgreSQL a pooled connection's driver cursor in
    autocommit, given back at the end of the block; a driver error comes out as SQLAlchemy's,
    so that the views' handling of lost connections (one retry, else 503) applies unchanged.
    On SQLite the request's own transaction."""
    if db.engine.dialect.name != "postgresql":
        yield SqliteHotPath(db.session.connection().connection.driver_connection)
        return
    try:
        pooled = db.engine.raw_connection()
    except psycopg.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc
    raw = pooled.driver_connection
    try:
        raw.autocommit = True
        with raw.cursor() as cursor:
            yield PostgresHotPath(cursor)
    except psycopg.Error as exc:
        lost = raw.broken or raw.closed
        if lost:
            pooled.invalidate()
        raise DBAPIError.instance(
            None, None, exc, psycopg.Error, connection_invalidated=lost
        ) from exc
    finally:
        if not (raw.broken or raw.closed):
            raw.autocommit = False
        pooled.close()


class SqliteHotPath:
    """On SQLite, in the request's transaction; times stored the way SQLAlchemy stores them."""

    def __init__(self, conn) -> None:
        self.conn = conn  # sqlite3.Connection

    def _entitlements(self, customer_id: str) -> Entitlements:
        rows = self.conn.execute(_SQLITE_ENTITLEMENTS, (customer_id, customer_id)).fetchall()
        return _entitlements(
            [(a, b) for kind, a, b in rows if kind == "e"],
            [(a, b) for kind, a, b in rows if kind == "g"],
        )

    def find_login(self, email: str) -> tuple[LoginRow, Entitlements] | None:
        """The customer of a login (emails are stored lower-cased) and entitlements."""
        row = self.conn.execute(_SQLITE_FIND_LOGIN, (email.lower(),)).fetchone()
        if row is None:
            return None
        return LoginRow(*row), self._entitlements(row[0])

    def start_session(
        self, session: dict, token_hash: str, audit_event: dict, entitlements_version: int
    ) -> None:
        """Insert a new session, its first refresh token and the login's audit event. Raises
        Superseded (nothing written) if the customer's entitlements changed since they were
        read, or the customer is gone."""
        s = {k: _to_sqlite(v) for k, v in session.items()}
        inserted = self.conn.execute(
            _SQLITE_INSERT_SESSION,
            (
                s["id"],
                s["customer_id"],
                s["client_id"],
                s["scope"],
                s["legal_entity_id"],
                s["auth_time"],
                s["created_at"],
                s["last_used_at"],
                s["expires_at"],
                s["idle_expires_at"],
                s["customer_id"],
                entitlements_version,
            ),
        )
        if inserted.rowcount != 1:
            raise Superseded
        self.conn.execute(
            _SQLITE_INSERT_TOKEN, (token_hash, s["id"], s["legal_entity_id"], s["created_at"])
        )
        self._audit(audit_event)

    def _audit(self, event: dict) -> None:
        self.conn.execute(
            _SQLITE_INSERT_AUDIT,
            (
                _to_sqlite(event["at"]),
                event["actor_type"],
                event["actor_id"],
                event["action"],
                event["customer_id"],
                event["target"],
                event["legal_entity_id"],
                json.dumps(event["details"]),
            ),
        )

    def load_refresh(self, token_hash: str) -> tuple[RefreshRow, Entitlements] | None:
        """The presented token with its session, its customer's status and entitlements."""
        row = self.conn.execute(_SQLITE_LOAD_REFRESH, (token_hash,)).fetchone()
        if row is None:
            return None
        times = _REFRESH_TIMES
        found = RefreshRow(*(_from_sqlite(v) if i in times else v for i, v in enumerate(row)))
        return found, self._entitlements(found.customer_id)

    def rotate(self, rotation: Rotation) -> bool:
        """Consume the presented token and insert its successor, atomically; False if it was
        consumed already (a concurrent refresh won). Raises Superseded (nothing written) if
        the customer's entitlements changed since they were read."""
        now = _to_sqlite(rotation.now)
        consumed = self.conn.execute(
            _SQLITE_CONSUME,
            (
                now,
                rotation.new_hash,
                rotation.old_hash,
                rotation.customer_id,
                rotation.entitlements_version,
            ),
        ).fetchone()
        if consumed is None:
            version = self.conn.execute(_SQLITE_VERSION, (rotation.customer_id,)).fetchone()
            if version is None or version[0] != rotation.entitlements_version:
                raise Superseded
            return False
        session_id = consumed[0]
        self.conn.execute(
            _SQLITE_INSERT_TOKEN, (rotation.new_hash, session_id, rotation.legal_entity_id, now)
        )
        self.conn.execute(
            _SQLITE_MOVE_SESSION,
            (rotation.legal_entity_id, now, _to_sqlite(rotation.idle_expires_at), session_id),
        )
        if rotation.switched:
            self._audit(rotation.audit_event(session_id))
        return True

    def session_state(self, sid: str, legal_entity_id: str | None) -> SessionState | None:
        """Everything introspection needs to know of a session, in one round trip."""
        row = self.conn.execute(
            _SQLITE_SESSION_STATE, (legal_entity_id, legal_entity_id, sid)
        ).fetchone()
        if row is None:
            return None
        return SessionState(*(_from_sqlite(v) if i < 3 else v for i, v in enumerate(row)))


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for DateTime on SQLite


def _to_sqlite(value):
    return value.strftime(_SQLITE_TIME) if isinstance(value, datetime) else value


def _from_sqlite(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


_TIMES = ("consumed_at", "auth_time", "expires_at", "idle_expires_at", "revoked_at")
_REFRESH_TIMES = frozenset(RefreshRow._fields.index(name) for name in _TIMES)

# RefreshRow's columns, in its order, for both backends.
_REFRESH_COLUMNS = """
    rt.token_hash, rt.consumed_at, rt.successor_hash, s.id, s.client_id, s.customer_id,
    s.scope, s.legal_entity_id, s.auth_time, s.expires_at, s.idle_expires_at,
    s.revoked_at, s.tokens_not_before, c.status, c.entitlements_version
"""
_REFRESH_FROM = """
    FROM refresh_tokens rt
    JOIN sessions s ON s.id = rt.session_id
    JOIN customers c ON c.id = s.customer_id
"""

_SQLITE_ENTITLEMENTS = """
    SELECT 'e', e.id, e.name
    FROM assignments a JOIN legal_entities e ON e.id = a.legal_entity_id
    WHERE a.customer_id = ?
    UNION ALL
    SELECT 'g', gm.legal_entity_id, gs.scope
    FROM group_members gm JOIN group_scopes gs ON gs.group_id = gm.group_id
    WHERE gm.customer_id = ?
"""
_SQLITE_FIND_LOGIN = """
    SELECT id, password_hash, status, default_legal_entity_id, entitlements_version
    FROM customers WHERE email = ?
"""
# The entitlements-version check of the module docstring, here and in _SQLITE_CONSUME. The
# request's transaction holds SQLite's write lock from its first statement, so a change cannot
# come between the read and the write; the check keeps the rule true on its own.
_SQLITE_CURRENT = "EXISTS (SELECT 1 FROM customers WHERE id = ? AND entitlements_version = ?)"
_SQLITE_INSERT_SESSION = f"""
    INSERT INTO sessions (id, customer_id, client_id, scope, legal_entity_id, auth_time,
                          created_at, last_used_at, expires_at, idle_expires_at)
    SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE {_SQLITE_CURRENT}
"""
_SQLITE_INSERT_TOKEN = """
    INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
    VALUES (?, ?, ?, ?)
"""
_SQLITE_INSERT_AUDIT = """
    INSERT INTO audit_events
        (at, actor_type, actor_id, action, customer_id, target, legal_entity_id, details)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_SQLITE_LOAD_REFRESH = f"SELECT {_REFRESH_COLUMNS} {_REFRESH_FROM} WHERE rt.token_hash = ?"
_SQLITE_VERSION = "SELECT entitlements_version FROM customers WHERE id = ?"
_SQLITE_CONSUME = f"""
    UPDATE refresh_tokens SET consumed_at = ?, successor_hash = ?
    WHERE token_hash = ? AND consumed_at IS NULL AND {_SQLITE_CURRENT}
    RETURNING session_id
"""  # noqa: S608 - constant SQL
_SQLITE_MOVE_SESSION = """
    UPDATE sessions SET legal_entity_id = ?, last_used_at = ?, idle_expires_at = ? WHERE id = ?
"""
_SQLITE_SESSION_STATE = """
    SELECT s.revoked_at, s.expires_at, s.idle_expires_at, s.tokens_not_before, c.status,
           ? IS NULL OR EXISTS (
               SELECT 1 FROM assignments a
               WHERE a.customer_id = s.customer_id AND a.legal_entity_id = ?)
    FROM sessions s JOIN customers c ON c.id = s.customer_id
    WHERE s.id = ?
"""


class PostgresHotPath:
    """On PostgreSQL: prepared statements in autocommit, one round trip each."""

    def __init__(self, cursor) -> None:
        self.cursor = cursor

    def _one(self, sql: str, params) -> tuple | None:
        self.cursor.execute(sql, params, prepare=True)
        return self.cursor.fetchone()

    def load_refresh(self, token_hash: str) -> tuple[RefreshRow, Entitlements] | None:
        row = self._one(_PG_LOAD_REFRESH, (token_hash,))
        if row is None:
            return None
        return RefreshRow(*row[:-2]), _entitlements(row[-2], row[-1])

    def find_login(self, email: str) -> tuple[LoginRow, Entitlements] | None:
        row = self._one(_PG_FIND_LOGIN, (email.lower(),))
        if row is None:
            return None
        return LoginRow(*row[:-2]), _entitlements(row[-2], row[-1])

    def start_session(
        self, session: dict, token_hash: str, audit_event: dict, entitlements_version: int
    ) -> None:
        params = session | _first_token(session, token_hash)
        params |= {f"audit_{k}": v for k, v in audit_event.items()}
        params["audit_details"] = json.dumps(audit_event["details"])
        params["entitlements_version"] = entitlements_version
        if self._one(_PG_START_SESSION, params)[0] != 1:
            raise Superseded

    def rotate(self, rotation: Rotation) -> bool:
        params = rotation._asdict()
        params["details"] = json.dumps(rotation.details)
        current, consumed = self._one(_PG_ROTATE, params)
        if not current:
            raise Superseded
        return consumed == 1

    def session_state(self, sid: str, legal_entity_id: str | None) -> SessionState | None:
        row = self._one(_PG_SESSION_STATE, (legal_entity_id, legal_entity_id, sid))
        return SessionState(*row) if row else None


_ENTITLEMENT_ARRAYS = """
           ARRAY(SELECT ARRAY[e.id, e.name]::text[]
                 FROM assignments a JOIN legal_entities e ON e.id = a.legal_entity_id
                 WHERE a.customer_id = c.id),
           ARRAY(SELECT ARRAY[gm.legal_entity_id, gs.scope]::text[]
                 FROM group_members gm JOIN group_scopes gs ON gs.group_id = gm.group_id
                 WHERE gm.customer_id = c.id)
"""

_PG_FIND_LOGIN = f"""
    SELECT c.id, c.password_hash, c.status, c.default_legal_entity_id, c.entitlements_version,
           {_ENTITLEMENT_ARRAYS}
    FROM customers c WHERE c.email = %s
"""  # noqa: S608 - constant SQL

# The entitlements-version check of the module docstring, first in both writes: the customer's
# row is share-locked before any other row, as a permission change locks it before the sessions.
# Should a change hold the row, the lock waits for its commit and then finds the version moved.
_PG_CURRENT = """
    current AS (
        SELECT 1 FROM customers
        WHERE id = %(customer_id)s AND entitlements_version = %(entitlements_version)s
        FOR SHARE
    )
"""

_PG_START_SESSION = f"""
    WITH {_PG_CURRENT}, session AS (
        INSERT INTO sessions (id, customer_id, client_id, scope, legal_entity_id, auth_time,
                              created_at, last_used_at, expires_at, idle_expires_at)
        SELECT %(id)s, %(customer_id)s, %(client_id)s, %(scope)s, %(legal_entity_id)s,
               %(auth_time)s, %(created_at)s, %(last_used_at)s, %(expires_at)s,
               %(idle_expires_at)s
        FROM current
        RETURNING id
    ), token AS (
        INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
        SELECT %(token_hash)s, id, %(legal_entity_id)s, %(created_at)s FROM session
    ), audited AS (
        INSERT INTO audit_events
            (at, actor_type, actor_id, action, customer_id, target, legal_entity_id, details)
        SELECT %(audit_at)s, %(audit_actor_type)s, %(audit_actor_id)s, %(audit_action)s,
               %(audit_customer_id)s, id, %(audit_legal_entity_id)s, %(audit_details)s::json
        FROM session
    )
    SELECT count(*) FROM session
"""  # noqa: S608 - constant SQL


_PG_LOAD_REFRESH = f"""
    SELECT {_REFRESH_COLUMNS}, {_ENTITLEMENT_ARRAYS} {_REFRESH_FROM} WHERE rt.token_hash = %s
"""

# One statement: atomic, and of concurrent refreshes exactly one consumes the token (the row
# lock decides); the audit event of a switch is written with it.
_PG_ROTATE = f"""
    WITH {_PG_CURRENT}, consumed AS (
        UPDATE refresh_tokens SET consumed_at = %(now)s, successor_hash = %(new_hash)s
        WHERE token_hash = %(old_hash)s AND consumed_at IS NULL
              AND EXISTS (SELECT 1 FROM current)
        RETURNING session_id
    ), inserted AS (
        INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
        SELECT %(new_hash)s, session_id, %(legal_entity_id)s, %(now)s FROM consumed
    ), moved AS (
        UPDATE sessions SET legal_entity_id = %(legal_entity_id)s, last_used_at = %(now)s,
                            idle_expires_at = %(idle_expires_at)s
        WHERE id IN (SELECT session_id FROM consumed)
    ), audited AS (
        INSERT INTO audit_events
            (at, actor_type, actor_id, action, customer_id, target, legal_entity_id, details)
        SELECT %(now)s, 'customer', %(customer_id)s, 'session.switched', %(customer_id)s,
               session_id, %(legal_entity_id)s, %(details)s::json
        FROM consumed WHERE %(legal_entity_id)s::text IS DISTINCT FROM %(previous_entity)s::text
    )
    SELECT (SELECT count(*) FROM current), (SELECT count(*) FROM consumed)
"""  # noqa: S608 - constant SQL

_PG_SESSION_STATE = """
    SELECT s.revoked_at, s.expires_at, s.idle_expires_at, s.tokens_not_before, c.status,
           %s::text IS NULL OR EXISTS (
               SELECT 1 FROM assignments a
               WHERE a.customer_id = s.customer_id AND a.legal_entity_id = %s)
    FROM sessions s JOIN customers c ON c.id = s.customer_id
    WHERE s.id = %s
"""
