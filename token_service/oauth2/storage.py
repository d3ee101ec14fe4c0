"""What the OAuth endpoints read besides their hot statements (those are in hotpath.py):
clients, kept briefly per process; a customer's entitlements (the admin API's preview); the ORM
rows that revocation and reuse detection change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import bindparam, event, literal, select, union_all, update

from ..expiring import ExpiringMap
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
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()

    @property
    def is_public(self) -> bool:
        return self.secret_hash is None


# Unknown ids count too (a scanner's guesses are answered from memory), within the bound.
_clients = ExpiringMap(maxsize=10_000, ttl=CLIENT_CACHE_SECONDS)
_MISSING = object()
# Bumped by every forget: a row read by another thread before the change is not kept after it.
_forgotten = [0]


def load_client(client_id: str) -> ClientInfo | None:
    cached = _clients.get(client_id, _MISSING)
    if cached is not _MISSING:
        return cached
    generation = _forgotten[0]
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
            tuple(row.redirect_uris or ()),
            tuple(row.post_logout_redirect_uris or ()),
        )
    _clients.put(client_id, info)
    if _forgotten[0] != generation:  # a change raced this read: keep nothing from it
        _clients.pop(client_id)
    return info


def forget_client(client_id: str | None = None) -> None:
    """Drop a client (or all) from this worker's cache, after changing it: now, and again
    when the change commits, since another thread may read the old row in between."""
    _drop_client(client_id)
    event.listen(db.session(), "after_commit", lambda _: _drop_client(client_id), once=True)


def _drop_client(client_id: str | None) -> None:
    _forgotten[0] += 1
    if client_id is None:
        _clients.clear()
    else:
        _clients.pop(client_id)


# -- customers -------------------------------------------------------------------------------


class Entitlements(NamedTuple):
    """The entities a customer may act for ([{id, name}] by name) and their group grants."""

    entities: list[dict]
    grants: list[GroupGrant]


# Built once (composing a statement costs more than running it).
_ENTITLEMENTS = union_all(
    select(literal("e").label("kind"), LegalEntity.id.label("a"), LegalEntity.name.label("b"))
    .join(Assignment, Assignment.legal_entity_id == LegalEntity.id)
    .where(Assignment.customer_id == bindparam("customer_id")),
    select(literal("g"), GroupMember.legal_entity_id, GroupScope.scope)
    .join(GroupScope, GroupScope.group_id == GroupMember.group_id)
    .where(GroupMember.customer_id == bindparam("customer_id")),
)


def by_name(entity: dict) -> tuple[str, str]:
    """Entities in the order of the token response's `legal_entities`."""
    return entity["name"], entity["id"]


def entitlements(customer_id: str) -> Entitlements:
    """Assignments and every group scope of a customer, in one round trip."""
    rows = db.session.execute(_ENTITLEMENTS, {"customer_id": customer_id}).all()
    entities = sorted(({"id": a, "name": b} for kind, a, b in rows if kind == "e"), key=by_name)
    return Entitlements(entities, [GroupGrant(a, b) for kind, a, b in rows if kind == "g"])


def set_password_hash(customer_id: str, password_hash: str) -> None:
    """A stronger hash of the same password (argon2id parameters raised since it was set)."""
    db.session.execute(
        update(Customer).where(Customer.id == customer_id).values(password_hash=password_hash)
    )


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
