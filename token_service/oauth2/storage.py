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
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Boolean, bindparam, insert, literal, select, text, union_all, update
from sqlalchemy.engine import Connection

from ..extensions import db
from ..models import (
    Assignment,
    AuditEvent,
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


_clients: dict[str, tuple[float, ClientInfo | None]] = {}
_clients_lock = threading.Lock()


def load_client(client_id: str) -> ClientInfo | None:
    now = time.monotonic()
    cached = _clients.get(client_id)
    if cached is not None and cached[0] > now:
        return cached[1]
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
        if len(_clients) > 10_000:  # unknown ids from a scanner must not grow it forever
            _clients.clear()
        _clients[client_id] = (now + CLIENT_CACHE_SECONDS, info)
    return info


def forget_client(client_id: str | None = None) -> None:
    """Drop a client (or all) from this worker's cache, after changing it."""
    with _clients_lock:
        if client_id is None:
            _clients.clear()
        else:
            _clients.pop(client_id, None)


# -- customers -------------------------------------------------------------------------------


def find_customer(email: str) -> Customer | None:
    """Case-insensitive: emails are stored lower-cased."""
    return db.session.scalars(select(Customer).where(Customer.email == email.lower())).first()


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
    entities = sorted(
        ({"id": a, "name": b} for kind, a, b in rows if kind == "e"),
        key=lambda e: (e["name"], e["id"]),
    )
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


_LOAD_REFRESH = (
    select(
        RefreshToken.token_hash,
        RefreshToken.consumed_at,
        RefreshToken.successor_hash,
        Session.id,
        Session.client_id,
        Session.customer_id,
        Session.scope,
        Session.legal_entity_id,
        Session.auth_time,
        Session.expires_at,
        Session.idle_expires_at,
        Session.revoked_at,
        Session.tokens_not_before,
        Customer.status,
    )
    .join(Session, Session.id == RefreshToken.session_id)
    .join(Customer, Customer.id == Session.customer_id)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)


@contextmanager
def hot_connection():
    """The connection of the hot paths (refresh, introspection): on PostgreSQL autocommit, so
    that reads cost no BEGIN and the rotation commits as one statement; on SQLite the request's
    transaction (see the module docstring)."""
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")
    else:
        yield db.session.connection()


def load_refresh(token_hash: str, conn: Connection | None = None) -> RefreshRow | None:
    """The presented token with its session and its customer's status, in one round trip."""
    row = (conn or db.session).execute(_LOAD_REFRESH, {"token_hash": token_hash}).first()
    return RefreshRow(*row) if row else None


_ROTATE_POSTGRES = text(
    """
    WITH consumed AS (
        UPDATE refresh_tokens SET consumed_at = :now, successor_hash = :new
        WHERE token_hash = :old AND consumed_at IS NULL
        RETURNING session_id
    ), inserted AS (
        INSERT INTO refresh_tokens (token_hash, session_id, legal_entity_id, created_at)
        SELECT :new, session_id, :entity, :now FROM consumed
    ), moved AS (
        UPDATE sessions SET legal_entity_id = :entity, last_used_at = :now,
                            idle_expires_at = :idle
        WHERE id IN (SELECT session_id FROM consumed)
    ), audited AS (
        INSERT INTO audit_events (at, actor_type, actor_id, action, customer_id, target, details)
        SELECT :now, 'customer', :customer, 'session.switched', :customer, session_id,
               CAST(:details AS JSON)
        FROM consumed WHERE CAST(:switched AS BOOLEAN)
    )
    SELECT count(*) FROM consumed
    """
)


def rotate(
    conn: Connection,
    *,
    old_hash: str,
    new_hash: str,
    customer_id: str,
    legal_entity_id: str | None,
    previous_entity: str | None,
    now: datetime,
    idle_expires_at: datetime,
) -> bool:
    """Consume `old_hash` and insert its successor, atomically; False if it was consumed
    already (a concurrent refresh won)."""
    switched = legal_entity_id != previous_entity
    details = {"previous": previous_entity, "legal_entity_id": legal_entity_id}
    if conn.dialect.name == "postgresql":
        won = conn.execute(
            _ROTATE_POSTGRES,
            {
                "old": old_hash,
                "new": new_hash,
                "now": now,
                "entity": legal_entity_id,
                "idle": idle_expires_at,
                "customer": customer_id,
                "switched": switched,
                "details": json.dumps(details),
            },
        ).scalar_one()
        return won == 1
    consumed = conn.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == old_hash, RefreshToken.consumed_at.is_(None))
        .values(consumed_at=now, successor_hash=new_hash)
        .returning(RefreshToken.session_id)
    ).first()
    if consumed is None:
        return False
    session_id = consumed[0]
    conn.execute(
        insert(RefreshToken).values(
            token_hash=new_hash,
            session_id=session_id,
            legal_entity_id=legal_entity_id,
            created_at=now,
        )
    )
    conn.execute(
        update(Session)
        .where(Session.id == session_id)
        .values(legal_entity_id=legal_entity_id, last_used_at=now, idle_expires_at=idle_expires_at)
    )
    if switched:
        conn.execute(
            insert(AuditEvent).values(
                at=now,
                actor_type="customer",
                actor_id=customer_id,
                action="session.switched",
                customer_id=customer_id,
                target=session_id,
                details=details,
            )
        )
    return True


def insert_refresh_token(
    token_hash: str, session_id: str, legal_entity_id: str | None, now: datetime
) -> None:
    db.session.execute(
        insert(RefreshToken).values(
            token_hash=token_hash,
            session_id=session_id,
            legal_entity_id=legal_entity_id,
            created_at=now,
        )
    )


# -- introspection ---------------------------------------------------------------------------


class SessionState(NamedTuple):
    revoked_at: datetime | None
    expires_at: datetime
    idle_expires_at: datetime
    tokens_not_before: int | None
    customer_status: str
    assigned: bool  # to the entity asked about (True when none was asked)


_SESSION_STATE = (
    select(
        Session.revoked_at,
        Session.expires_at,
        Session.idle_expires_at,
        Session.tokens_not_before,
        Customer.status,
        (Assignment.customer_id.is_not(None) | bindparam("no_entity", type_=Boolean)),
    )
    .join(Customer, Customer.id == Session.customer_id)
    .outerjoin(
        Assignment,
        (Assignment.customer_id == Session.customer_id)
        & (Assignment.legal_entity_id == bindparam("entity")),
    )
    .where(Session.id == bindparam("sid"))
)


def session_state(conn: Connection, sid: str, legal_entity_id: str | None) -> SessionState | None:
    """Everything introspection needs to know of a session, in one round trip."""
    row = conn.execute(
        _SESSION_STATE,
        {"sid": sid, "entity": legal_entity_id, "no_entity": legal_entity_id is None},
    ).first()
    return SessionState(*row) if row else None


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
