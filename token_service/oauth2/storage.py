"""The token endpoint's queries: few, indexed, and nothing loaded that the grant will not use."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update

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


def load_client(client_id: str) -> Client | None:
    return db.session.get(Client, client_id)


def find_customer(email: str) -> Customer | None:
    """Case-insensitive: emails are stored lower-cased."""
    return db.session.scalars(select(Customer).where(Customer.email == email.lower())).first()


def load_refresh_token(token_hash: str) -> tuple[RefreshToken, Session, Customer] | None:
    """The presented token with its session and customer, in one round trip."""
    row = db.session.execute(
        select(RefreshToken, Session, Customer)
        .join(Session, Session.id == RefreshToken.session_id)
        .join(Customer, Customer.id == Session.customer_id)
        .where(RefreshToken.token_hash == token_hash)
    ).first()
    return tuple(row) if row else None


def assigned_entities(customer_id: str) -> list[dict]:
    """The entities a customer may act for, as the token response lists them."""
    rows = db.session.execute(
        select(LegalEntity.id, LegalEntity.name)
        .join(Assignment, Assignment.legal_entity_id == LegalEntity.id)
        .where(Assignment.customer_id == customer_id)
        .order_by(LegalEntity.name, LegalEntity.id)
    )
    return [{"id": id_, "name": name} for id_, name in rows]


def group_grants(customer_id: str, legal_entity_id: str | None) -> list[GroupGrant]:
    """Scopes held through the customer's groups in that entity and tenant-wide groups."""
    entity_match = GroupMember.legal_entity_id.is_(None)
    if legal_entity_id is not None:
        entity_match = entity_match | (GroupMember.legal_entity_id == legal_entity_id)
    rows = db.session.execute(
        select(GroupMember.legal_entity_id, GroupScope.scope)
        .join(GroupScope, GroupScope.group_id == GroupMember.group_id)
        .where(GroupMember.customer_id == customer_id, entity_match)
    )
    return [GroupGrant(entity, scope) for entity, scope in rows]


def consume(token_hash: str, now: datetime) -> bool:
    """Mark a refresh token consumed if nobody else has: the single point where concurrent
    refreshes with one token are decided (a row lock on PostgreSQL, the write lock on SQLite)."""
    result = db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.consumed_at.is_(None))
        .values(consumed_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def insert_refresh_token(
    token_hash: str,
    session_id: str,
    parent_hash: str | None,
    legal_entity_id: str | None,
    now: datetime,
) -> None:
    db.session.execute(
        insert(RefreshToken).values(
            token_hash=token_hash,
            session_id=session_id,
            parent_hash=parent_hash,
            legal_entity_id=legal_entity_id,
            created_at=now,
        )
    )


def touch_session(
    session_id: str, legal_entity_id: str | None, now: datetime, idle_expires_at: datetime
) -> None:
    db.session.execute(
        update(Session)
        .where(Session.id == session_id)
        .values(legal_entity_id=legal_entity_id, last_used_at=now, idle_expires_at=idle_expires_at)
        .execution_options(synchronize_session=False)
    )


def count_live_sessions(customer_id: str) -> int:
    return db.session.scalar(
        select(func.count())
        .select_from(Session)
        .where(Session.customer_id == customer_id, Session.revoked_at.is_(None))
    )


def load_session(session_id: str) -> tuple[Session, Customer] | None:
    row = db.session.execute(
        select(Session, Customer)
        .join(Customer, Customer.id == Session.customer_id)
        .where(Session.id == session_id)
    ).first()
    return tuple(row) if row else None


def is_assigned(customer_id: str, legal_entity_id: str) -> bool:
    return db.session.get(Assignment, (customer_id, legal_entity_id)) is not None
