"""The session store on PostgreSQL: psycopg, server-side prepared statements, autocommit.

A login is one read and one write; a refresh one read (the token, its session, the customer
and the entitlements as an array) and one write: a single statement consumes the presented
token, inserts its successor, moves the session and, on a switch, writes the audit event. One
statement is atomic, so of concurrent refreshes exactly one consumes the token (the row lock
decides), and no BEGIN/COMMIT round trips are spent. SQLAlchemy's statement layer would cost
more than the statements themselves, so they go straight to the driver.

Both writes hold the customer's row FOR SHARE while they check its `entitlements_version`
(see the package docstring): a permission change locks the row before it lists the sessions it
denies, so it waits for a write in flight, or the write waits for it and finds the version
moved. One more primary-key lookup in a statement that runs anyway.
"""

from __future__ import annotations

import orjson
import psycopg
from sqlalchemy.exc import DBAPIError

from ... import audit
from ...entitlements import Entitlements, from_rows, rows_sql
from .base import AUDIT_COLUMNS, SessionStore, session_event
from .connections import Held, SlotConnections
from .rows import LoginRow, NewSession, RefreshRow, Rotation, SessionState, Superseded


def _prepared(conn) -> Held:
    conn.autocommit = True  # each statement commits on its own (the module docstring)
    return Held(conn, conn.cursor())


def _sqlalchemy_error(exc: psycopg.Error, lost: bool) -> DBAPIError:
    """A driver error as SQLAlchemy's, so that the front's handling of lost connections (one
    retry, else 503) applies unchanged."""
    return DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=lost)


def _audit_params(event: dict) -> dict:
    params = {f"audit_{name}": event[name] for name in AUDIT_COLUMNS}
    params["audit_details"] = orjson.dumps(event["details"]).decode()
    return params


class PostgresSessions(SessionStore):
    def __init__(self) -> None:
        self._connections = SlotConnections(_prepared)

    def _one(self, sql: str, params) -> tuple | None:
        """One prepared statement's first row, on this thread's connection."""
        try:
            held = self._connections.get()
        except psycopg.Error as exc:
            raise _sqlalchemy_error(exc, False) from exc
        try:
            held.cursor.execute(sql, params, prepare=True)
            return held.cursor.fetchone()
        except psycopg.Error as exc:
            lost = held.conn.broken or held.conn.closed
            if lost:
                self._connections.drop(held)
            raise _sqlalchemy_error(exc, lost) from exc

    def _login(self, by: str, key: str) -> tuple[LoginRow, Entitlements] | None:
        row = self._one(_LOGIN[by], (key,))
        return None if row is None else (LoginRow(*row[:-1]), from_rows(row[-1]))

    def start_session(
        self, session: NewSession, token_hash: str, entitlements_version: int
    ) -> None:
        event = session_event(session)
        params = session._asdict() | _audit_params(event)
        params |= {"token_hash": token_hash, "now": session.created_at}
        params["entitlements_version"] = entitlements_version
        if self._one(_START_SESSION, params)[0] != 1:
            raise Superseded
        audit.emit(event)

    def load_refresh(self, token_hash: str) -> tuple[RefreshRow, Entitlements] | None:
        row = self._one(_LOAD_REFRESH, (token_hash,))
        return None if row is None else (RefreshRow(*row[:-1]), from_rows(row[-1]))

    def rotate(self, rotation: Rotation) -> bool:
        event = session_event(rotation) if rotation.switched else None
        params = rotation._asdict() | {"switched": event is not None}
        params |= _NO_AUDIT if event is None else _audit_params(event)
        current, consumed = self._one(_ROTATE, params)
        if not current:
            raise Superseded
        if consumed and event is not None:
            audit.emit(event)
        return consumed == 1

    def session_state(self, sid: str, legal_entity_id: str | None) -> SessionState | None:
        row = self._one(_SESSION_STATE, (legal_entity_id, legal_entity_id, sid))
        return SessionState(*row) if row else None


_NO_AUDIT = {f"audit_{name}": None for name in AUDIT_COLUMNS}

_ENTITLEMENTS = f"ARRAY(SELECT ARRAY[kind, a, b]::text[] FROM ({rows_sql('c.id')}) r)"  # noqa: S608
_LOGIN = {
    by: f"""
        SELECT c.id, c.email, c.password_hash, c.status, c.default_legal_entity_id,
               c.entitlements_version, {_ENTITLEMENTS}
        FROM customers c WHERE c.{by} = %s
    """  # noqa: S608 - constant SQL
    for by in ("email", "id")
}

# The entitlements-version check, first in both writes: the customer's row is share-locked
# before any other row, as a permission change locks it before the sessions. Should a change
# hold the row, the lock waits for its commit and then finds the version moved.
_CURRENT = """
    current AS (
        SELECT 1 FROM customers
        WHERE id = %(customer_id)s AND entitlements_version = %(entitlements_version)s
        FOR SHARE
    )
"""


def _insert_token(hash_param: str, source: str) -> str:
    """INSERT a refresh token of the session that `source` (a CTE with `session_id`) names."""
    return f"""
        INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
        SELECT %({hash_param})s, session_id, %(legal_entity_id)s, %(now)s FROM {source}
    """  # noqa: S608 - constant SQL


def _insert_audit(source: str, condition: str = "TRUE") -> str:
    """INSERT the audit row given as `audit_*` parameters, once per row of `source`."""
    values = ", ".join(f"%(audit_{name})s" for name in AUDIT_COLUMNS[:-1])
    return f"""
        INSERT INTO audit_events ({", ".join(AUDIT_COLUMNS)})
        SELECT {values}, %(audit_details)s::json FROM {source} WHERE {condition}
    """  # noqa: S608 - constant SQL


_START_SESSION = f"""
    WITH {_CURRENT}, session AS (
        INSERT INTO sessions (id, customer_id, client_id, scope, legal_entity_id, auth_time,
                              created_at, last_used_at, expires_at, idle_expires_at)
        SELECT %(id)s, %(customer_id)s, %(client_id)s, %(scope)s, %(legal_entity_id)s,
               %(auth_time)s, %(created_at)s, %(created_at)s, %(expires_at)s,
               %(idle_expires_at)s
        FROM current
        RETURNING id AS session_id
    ), token AS ({_insert_token("token_hash", "session")}
    ), audited AS ({_insert_audit("session")}
    )
    SELECT count(*) FROM session
"""  # noqa: S608 - constant SQL

_REFRESH_COLUMNS = """
    rt.token_hash, rt.created_at, rt.consumed_at, rt.successor_hash, s.id, s.client_id,
    s.customer_id, s.scope, s.legal_entity_id, s.auth_time, s.expires_at, s.idle_expires_at,
    s.revoked_at, s.tokens_not_before, c.status, c.entitlements_version
"""
_LOAD_REFRESH = f"""
    SELECT {_REFRESH_COLUMNS}, {_ENTITLEMENTS}
    FROM refresh_tokens rt
    JOIN sessions s ON s.id = rt.session_id
    JOIN customers c ON c.id = s.customer_id
    WHERE rt.token_hash = %s
"""  # noqa: S608 - constant SQL

# One statement: atomic, and of concurrent refreshes exactly one consumes the token (the row
# lock decides); the audit event of a switch is written with it.
_ROTATE = f"""
    WITH {_CURRENT}, consumed AS (
        UPDATE refresh_tokens SET consumed_at = %(now)s, successor_hash = %(new_hash)s
        WHERE token_hash = %(old_hash)s AND consumed_at IS NULL
              AND EXISTS (SELECT 1 FROM current)
        RETURNING session_id
    ), inserted AS ({_insert_token("new_hash", "consumed")}
    ), moved AS (
        UPDATE sessions SET legal_entity_id = %(legal_entity_id)s, last_used_at = %(now)s,
                            idle_expires_at = %(idle_expires_at)s
        WHERE id IN (SELECT session_id FROM consumed)
    ), audited AS ({_insert_audit("consumed", "%(switched)s")}
    )
    SELECT (SELECT count(*) FROM current), (SELECT count(*) FROM consumed)
"""  # noqa: S608 - constant SQL

_SESSION_STATE = """
    SELECT s.revoked_at, s.expires_at, s.idle_expires_at, s.tokens_not_before, c.status,
           %s::text IS NULL OR EXISTS (
               SELECT 1 FROM assignments a
               WHERE a.customer_id = s.customer_id AND a.legal_entity_id = %s)
    FROM sessions s JOIN customers c ON c.id = s.customer_id
    WHERE s.id = %s
"""
