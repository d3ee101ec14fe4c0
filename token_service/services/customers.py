"""Customers and their credentials: creating, changing, blocking and deleting them."""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..inputs import InvalidEmail, normalize_email
from ..models import (
    Assignment,
    Customer,
    new_id,
)
from ..revocation import fence_issuance
from ..security import hash_password
from .base import ServiceError, found, record, unknown_changes
from .sessions import revoke_all_sessions


def valid_email(email: str) -> str:
    """An address in its one stored form (inputs.normalize_email), or a 400 saying why not."""
    try:
        return normalize_email(email)
    except InvalidEmail as exc:
        raise ServiceError(str(exc), field="email") from None


def create_customer(
    email: str,
    password: str | None,
    *,
    id: str | None = None,
    default_legal_entity_id: str | None = None,
) -> Customer:
    email = valid_email(email)
    if db.session.scalar(select(Customer.id).where(Customer.email == email)):
        raise ServiceError("a customer with this email exists", status=409, field="email")
    customer = Customer(
        id=id or new_id("cus"),
        email=email,
        password_hash=hash_password(password) if password else None,
        status="active",
        default_legal_entity_id=default_legal_entity_id,
    )
    db.session.add(customer)
    db.session.flush()
    return customer


CUSTOMER_CHANGES = ("email", "password", "default_legal_entity_id")


def _apply_changes(customer_id: str, changes: dict) -> Customer:
    """Change email (unique, case-insensitive), password (None: no password login) or the
    default legal entity (one the customer is assigned to, or None)."""
    unknown_changes(changes, CUSTOMER_CHANGES)
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise ServiceError("customer not found", status=404)
    if "email" in changes:
        email = valid_email(changes["email"])
        taken = db.session.scalar(
            select(Customer.id).where(Customer.email == email, Customer.id != customer_id)
        )
        if taken:
            raise ServiceError("a customer with this email exists", status=409, field="email")
        customer.email = email
    if "password" in changes:
        password = changes["password"]
        customer.password_hash = hash_password(password) if password else None
    if "default_legal_entity_id" in changes:
        entity_id = changes["default_legal_entity_id"]
        if entity_id is not None and db.session.get(Assignment, (customer_id, entity_id)) is None:
            raise ServiceError(
                "the customer is not assigned to that legal entity",
                status=409,
                field="default_legal_entity_id",
            )
        customer.default_legal_entity_id = entity_id
    customer.version += 1
    db.session.flush()
    return customer


def update_customer(customer_id: str, changes: dict, *, actor) -> Customer:
    """Change a customer's email, password or default entity (update_customer);
    a new or removed password signs them out everywhere, as a reset must."""
    customer = _apply_changes(customer_id, changes)
    if "password" in changes:
        revoke_all_sessions(customer_id, "password_changed", actor=actor)
    return customer


def delete_customer(customer_id: str, *, actor) -> Customer:
    """Delete a customer, signed out everywhere first so their access tokens stop at once."""
    customer = found(Customer, customer_id, "customer not found")
    revoke_all_sessions(customer_id, "customer_deleted", actor=actor)
    db.session.delete(customer)  # assignments, memberships and sessions go with it
    db.session.flush()
    return customer


def block_customer(customer_id: str, *, actor) -> None:
    """Block a customer: signed out everywhere, no new login until unblocked."""
    customer = found(Customer, customer_id, "customer not found")
    fence_issuance([customer_id])
    customer.status = "blocked"
    customer.version += 1
    revoke_all_sessions(customer_id, "customer_blocked", actor=actor)
    record("customer.blocked", actor, customer_id=customer_id)


def unblock_customer(customer_id: str, *, actor) -> None:
    """Let a blocked customer log in again (revoked sessions and ended browser sessions stay
    so: they sign in anew)."""
    customer = found(Customer, customer_id, "customer not found")
    customer.status = "active"
    customer.version += 1
    record("customer.unblocked", actor, customer_id=customer_id)
