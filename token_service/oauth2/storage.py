"""The token endpoint's queries: few round trips, plain rows, nothing loaded that goes unused.

The refresh path is the hottest in the service. On PostgreSQL it runs on an autocommit
connection: two reads, then one statement that consumes the presented token, inserts its
successor, moves the session and (on a switch) writes the audit event; a single statement is
atomic, so of concurrent refreshes exactly one consumes the token (the row lock decides), and
no BEGIN/COMMIT round trips are spent. On SQLite the same steps run in the request's
transaction, which holds the write lock from the first read (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import psycopg
from cachetools import TTLCache
from sqlalchemy import bindparam, literal, select, union_all, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..extensions import db
from ..models import (
    Assignment,
    Client,
    Customer,
    GroupMember,
    GroupScope,
    LegalEntity,
    RefreshToken,
    Session,
)
from ..scopes import GroupGrant

# -- clients: a short-lived per-process cache ------------------------------------------------

#: Seconds a worker may keep using a client's row: a change (secret rotation, new ceiling,
#: deletion) reaches every worker within this time; the worker that made it sees it at once.
CLIENT_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class ClientInfo:
    """What the token endpoint needs of a client, detached from any database session."""

    client_id: str
    secret_hash: str | None
    grant_types: str
    scope: str
    first_party: bool
    audience: str | None
    access_token_ttl: int | None
    refresh_token_ttl: int | None

    @property
    def is_public(self) -> bool:
        return self.secret_hash is None


# Unknown ids count too (a scanner's guesses are answered from memory), within the bound.
_clients: TTLCache = TTLCache(maxsize=10_000, ttl=CLIENT_CACHE_SECONDS)
_clients_lock = threading.Lock()
_MISSING = object()


def load_client(client_id: str) -> ClientInfo | None:
    with _clients_lock:
        cached = _clients.get(client_id, _MISSING)
    if cached is not _MISSING:
        return cached
    row = db.session.get(Client, client_id)
    info = None
    if row is not None:
        info = ClientInfo(
            row.client_id,
            row.secret_hash,
            row.grant_types,
            row.scope,
            row.first_party,
            row.audience,
            row.access_token_ttl,
            row.refresh_token_ttl,
        )
    with _clients_lock:
        _clients[client_id] = info
    return info


def forget_client(client_id: str | None = None) -> None:
    """Drop a client (or all) from this worker's cache, after changing it."""
    with _clients_lock:
        if client_id is None:
            _clients.clear()
        else:
            _clients.pop(client_id, None)


# -- customers -------------------------------------------------------------------------------


class Entitlements(NamedTuple):
    """The entities a customer may act for ([{id, name}] by name) and their group grants."""

    entities: list[dict]
    grants: list[GroupGrant]


# Built once: composing a statement costs more than running it on the hot path.
_ENTITLEMENTS = union_all(
    select(literal("e").label("kind"), LegalEntity.id.label("a"), LegalEntity.name.label("b"))
    .join(Assignment, Assignment.legal_entity_id == LegalEntity.id)
    .where(Assignment.customer_id == bindparam("customer_id")),
    select(literal("g"), GroupMember.legal_entity_id, GroupScope.scope)
    .join(GroupScope, GroupScope.group_id == GroupMember.group_id)
    .where(GroupMember.customer_id == bindparam("customer_id")),
)


def entitlements(customer_id: str, conn: Connection | None = None) -> Entitlements:
    """Assignments and every group scope of a customer, in one round trip."""
    rows = (conn or db.session).execute(_ENTITLEMENTS, {"customer_id": customer_id}).all()
    entities = sorted(({"id": a, "name": b} for kind, a, b in rows if kind == "e"), key=_by_name)
    return Entitlements(entities, [GroupGrant(a, b) for kind, a, b in rows if kind == "g"])


# -- refresh tokens --------------------------------------------------------------------------


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


class HotPath:
    """The statements of the token endpoint and introspection, on SQLite: plain SQL on the
    driver's connection, in the request's transaction (which holds the write lock from its
    first statement: BEGIN IMMEDIATE, see database.py). SQLAlchemy's statement layer cost
    more than SQLite itself here; the columns are those of models.py, times stored the way
    SQLAlchemy stores them."""

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

    def start_session(self, session: dict, token_hash: str, audit_event: dict) -> None:
        """Insert a new session, its first refresh token and the login's audit event."""
        s = {k: _to_sqlite(v) for k, v in session.items()}
        self.conn.execute(
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
            ),
        )
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
        consumed already (a concurrent refresh won)."""
        now = _to_sqlite(rotation.now)
        consumed = self.conn.execute(
            _SQLITE_CONSUME, (now, rotation.new_hash, rotation.old_hash)
        ).fetchone()
        if consumed is None:
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


_REFRESH_TIMES = {1, 8, 9, 10, 11}  # consumed_at, auth_time, expires_at, idle_..., revoked_at

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
    SELECT id, password_hash, status, default_legal_entity_id FROM customers WHERE email = ?
"""
_SQLITE_INSERT_SESSION = """
    INSERT INTO sessions (id, customer_id, client_id, scope, legal_entity_id, auth_time,
                          created_at, last_used_at, expires_at, idle_expires_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SQLITE_INSERT_TOKEN = """
    INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
    VALUES (?, ?, ?, ?)
"""
_SQLITE_INSERT_AUDIT = """
    INSERT INTO audit_events (at, actor_type, actor_id, action, customer_id, target, details)
    VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_SQLITE_LOAD_REFRESH = """
    SELECT rt.token_hash, rt.consumed_at, rt.successor_hash, s.id, s.client_id, s.customer_id,
           s.scope, s.legal_entity_id, s.auth_time, s.expires_at, s.idle_expires_at,
           s.revoked_at, s.tokens_not_before, c.status
    FROM refresh_tokens rt
    JOIN sessions s ON s.id = rt.session_id
    JOIN customers c ON c.id = s.customer_id
    WHERE rt.token_hash = ?
"""
_SQLITE_CONSUME = """
    UPDATE refresh_tokens SET consumed_at = ?, successor_hash = ?
    WHERE token_hash = ? AND consumed_at IS NULL
    RETURNING session_id
"""
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


class PostgresHotPath(HotPath):
    """The same on PostgreSQL: plain SQL on the driver's cursor, prepared on the server, on an
    autocommit connection. One read (token, session, customer and entitlements) and one write
    per refresh; SQLAlchemy's statement layer cost more than the round trips it wrapped."""

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

    def start_session(self, session: dict, token_hash: str, audit_event: dict) -> None:
        params = session | _first_token(session, token_hash)
        params |= {f"audit_{k}": v for k, v in audit_event.items()}
        params["audit_details"] = json.dumps(audit_event["details"])
        self.cursor.execute(_PG_START_SESSION, params, prepare=True)

    def rotate(self, rotation: Rotation) -> bool:
        params = rotation._asdict()
        params["details"] = json.dumps(rotation.details)
        return self._one(_PG_ROTATE, params)[0] == 1

    def session_state(self, sid: str, legal_entity_id: str | None) -> SessionState | None:
        row = self._one(_PG_SESSION_STATE, (legal_entity_id, legal_entity_id, sid))
        return SessionState(*row) if row else None


def _by_name(entity: dict) -> tuple[str, str]:
    return entity["name"], entity["id"]


def _entitlements(entities: list[list[str]], grants: list[list[str]]) -> Entitlements:
    """From the two arrays of the PostgreSQL reads: [[id, name]] and [[entity, scope]]."""
    return Entitlements(
        sorted(({"id": a, "name": b} for a, b in entities), key=_by_name),
        [GroupGrant(a, b) for a, b in grants],
    )


def _first_token(session: dict, token_hash: str) -> dict:
    return {
        "token_hash": token_hash,
        "session_id": session["id"],
        "legal_entity_id": session["legal_entity_id"],
        "created_at": session["created_at"],
    }


class LoginRow(NamedTuple):
    id: str
    password_hash: str | None
    status: str
    default_legal_entity_id: str | None


_ENTITLEMENT_ARRAYS = """
           ARRAY(SELECT ARRAY[e.id, e.name]::text[]
                 FROM assignments a JOIN legal_entities e ON e.id = a.legal_entity_id
                 WHERE a.customer_id = c.id),
           ARRAY(SELECT ARRAY[gm.legal_entity_id, gs.scope]::text[]
                 FROM group_members gm JOIN group_scopes gs ON gs.group_id = gm.group_id
                 WHERE gm.customer_id = c.id)
"""

_PG_FIND_LOGIN = f"""
    SELECT c.id, c.password_hash, c.status, c.default_legal_entity_id, {_ENTITLEMENT_ARRAYS}
    FROM customers c WHERE c.email = %s
"""  # noqa: S608 - constant SQL

_PG_START_SESSION = """
    WITH session AS (
        INSERT INTO sessions (id, customer_id, client_id, scope, legal_entity_id, auth_time,
                              created_at, last_used_at, expires_at, idle_expires_at)
        VALUES (%(id)s, %(customer_id)s, %(client_id)s, %(scope)s, %(legal_entity_id)s,
                %(auth_time)s, %(created_at)s, %(last_used_at)s, %(expires_at)s,
                %(idle_expires_at)s)
        RETURNING id
    ), token AS (
        INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
        SELECT %(token_hash)s, id, %(legal_entity_id)s, %(created_at)s FROM session
    )
    INSERT INTO audit_events (at, actor_type, actor_id, action, customer_id, target, details)
    SELECT %(audit_at)s, %(audit_actor_type)s, %(audit_actor_id)s, %(audit_action)s,
           %(audit_customer_id)s, id, %(audit_details)s::json
    FROM session
"""


class Rotation(NamedTuple):
    old_hash: str
    new_hash: str
    customer_id: str
    legal_entity_id: str | None
    previous_entity: str | None
    now: datetime
    idle_expires_at: datetime

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
            "details": self.details,
        }


_PG_LOAD_REFRESH = f"""
    SELECT rt.token_hash, rt.consumed_at, rt.successor_hash, s.id, s.client_id, s.customer_id,
           s.scope, s.legal_entity_id, s.auth_time, s.expires_at, s.idle_expires_at,
           s.revoked_at, s.tokens_not_before, c.status, {_ENTITLEMENT_ARRAYS}
    FROM refresh_tokens rt
    JOIN sessions s ON s.id = rt.session_id
    JOIN customers c ON c.id = s.customer_id
    WHERE rt.token_hash = %s
"""  # noqa: S608 - constant SQL

# One statement: atomic, and of concurrent refreshes exactly one consumes the token (the row
# lock decides); the audit event of a switch is written with it.
_PG_ROTATE = """
    WITH consumed AS (
        UPDATE refresh_tokens SET consumed_at = %(now)s, successor_hash = %(new_hash)s
        WHERE token_hash = %(old_hash)s AND consumed_at IS NULL
        RETURNING session_id
    ), inserted AS (
        INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
        SELECT %(new_hash)s, session_id, %(legal_entity_id)s, %(now)s FROM consumed
    ), moved AS (
        UPDATE sessions SET legal_entity_id = %(legal_entity_id)s, last_used_at = %(now)s,
                            idle_expires_at = %(idle_expires_at)s
        WHERE id IN (SELECT session_id FROM consumed)
    ), audited AS (
        INSERT INTO audit_events (at, actor_type, actor_id, action, customer_id, target, details)
        SELECT %(now)s, 'customer', %(customer_id)s, 'session.switched', %(customer_id)s,
               session_id, %(details)s::json
        FROM consumed WHERE %(legal_entity_id)s::text IS DISTINCT FROM %(previous_entity)s::text
    )
    SELECT count(*) FROM consumed
"""

_PG_SESSION_STATE = """
    SELECT s.revoked_at, s.expires_at, s.idle_expires_at, s.tokens_not_before, c.status,
           %s::text IS NULL OR EXISTS (
               SELECT 1 FROM assignments a
               WHERE a.customer_id = s.customer_id AND a.legal_entity_id = %s)
    FROM sessions s JOIN customers c ON c.id = s.customer_id
    WHERE s.id = %s
"""


@contextmanager
def hot_path():
    """The statements of the hot paths (refresh, introspection). On PostgreSQL a pooled
    connection's driver cursor in autocommit: reads cost no BEGIN, the rotation commits as one
    statement. A driver error comes out as SQLAlchemy's, so that the views' handling of lost
    connections (one retry, else 503) applies unchanged."""
    if db.engine.dialect.name != "postgresql":
        yield HotPath(db.session.connection().connection.driver_connection)
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


def set_password_hash(customer_id: str, password_hash: str) -> None:
    """A stronger hash of the same password (argon2id parameters raised since it was set)."""
    db.session.execute(
        update(Customer).where(Customer.id == customer_id).values(password_hash=password_hash)
    )


# -- introspection ---------------------------------------------------------------------------


class SessionState(NamedTuple):
    revoked_at: datetime | None
    expires_at: datetime
    idle_expires_at: datetime
    tokens_not_before: int | None
    customer_status: str
    assigned: bool  # to the entity asked about (True when none was asked)


# -- revocation and reuse (ORM: off the hot paths) -------------------------------------------


def load_refresh_token(token_hash: str) -> tuple[RefreshToken, Session, Customer] | None:
    """The presented token with its session and customer as ORM objects."""
    row = db.session.execute(
        select(RefreshToken, Session, Customer)
        .join(Session, Session.id == RefreshToken.session_id)
        .join(Customer, Customer.id == Session.customer_id)
        .where(RefreshToken.token_hash == token_hash)
    ).first()
    return tuple(row) if row else None


def is_assigned(customer_id: str, legal_entity_id: str) -> bool:
    return db.session.get(Assignment, (customer_id, legal_entity_id)) is not None
