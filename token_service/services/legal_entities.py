"""Legal entities (companies and their subsidiaries) and customers' assignments to them."""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..models import (
    ASSIGNMENT_TYPES,
    PREDEFINED_GROUPS,
    Assignment,
    Customer,
    CustomerGroup,
    GroupScope,
    LegalEntity,
    new_id,
)
from ..revocation import fence_issuance
from ..scopes import split_scopes
from .base import ServiceError, found, record, settings, unknown_changes
from .catalogue import ensure_scopes
from .groups import add_member, group_of
from .sessions import deny_all, live_sessions


def _would_cycle(entity_id: str, parent_id: str) -> bool:
    seen = set()
    current = parent_id
    while current is not None:
        if current == entity_id or current in seen:
            return True
        seen.add(current)
        current = db.session.scalar(select(LegalEntity.parent_id).where(LegalEntity.id == current))
    return False


def create_legal_entity(
    name: str,
    *,
    type: str = "COMPANY",
    parent_id: str | None = None,
    id: str | None = None,
    account_limit: dict | None = None,
) -> LegalEntity:
    """A company or subsidiary, with its predefined ADMIN, BUYER, REQUESTER and CONTACT groups."""
    if type not in ("COMPANY", "SUBSIDIARY"):
        raise ServiceError("type must be COMPANY or SUBSIDIARY", field="type")
    if type == "SUBSIDIARY":
        if not parent_id:
            raise ServiceError("a subsidiary needs parent_id", field="parent_id")
        if db.session.get(LegalEntity, parent_id) is None:
            raise ServiceError("parent legal entity not found", field="parent_id")
    elif parent_id:
        raise ServiceError("a company has no parent", field="parent_id")
    entity_id = id or new_id("le")
    if db.session.get(LegalEntity, entity_id) is not None:
        raise ServiceError("legal entity exists", status=409, field="id")
    entity = LegalEntity(id=entity_id, name=name, type=type, parent_id=parent_id)
    if account_limit:
        entity.account_limit_currency = account_limit.get("currency")
        entity.account_limit_value = account_limit.get("value")
    db.session.add(entity)
    db.session.flush()
    templates = settings().group_templates
    for code in PREDEFINED_GROUPS:
        scopes = split_scopes(templates.get(code, ""))
        ensure_scopes(scopes, predefined=True)
        group = CustomerGroup(
            id=new_id("grp"),
            name=code.capitalize(),
            legal_entity_id=entity_id,
            code=code,
            predefined=True,
        )
        db.session.add(group)
        db.session.flush()
        db.session.add_all(GroupScope(group_id=group.id, scope=s) for s in sorted(scopes))
    db.session.flush()
    return entity


ENTITY_CHANGES = ("name", "parent_id", "account_limit")


def update_legal_entity(legal_entity_id: str, changes: dict) -> LegalEntity:
    """Rename, set or clear the account limit, move a subsidiary (never into a cycle)."""
    unknown_changes(changes, ENTITY_CHANGES)
    entity = db.session.get(LegalEntity, legal_entity_id)
    if entity is None:
        raise ServiceError("legal entity not found", status=404)
    if "parent_id" in changes and changes["parent_id"] != entity.parent_id:
        parent_id = changes["parent_id"]
        if entity.type == "COMPANY":
            raise ServiceError("a company has no parent", field="parent_id")
        if not parent_id:
            raise ServiceError("a subsidiary needs parent_id", field="parent_id")
        if db.session.get(LegalEntity, parent_id) is None:
            raise ServiceError("parent legal entity not found", field="parent_id")
        if _would_cycle(entity.id, parent_id):
            raise ServiceError("the parent would make a cycle", status=409, field="parent_id")
        entity.parent_id = parent_id
    if "name" in changes:
        entity.name = changes["name"]
    if "account_limit" in changes:
        limit = changes["account_limit"] or {}
        entity.account_limit_currency = limit.get("currency")
        entity.account_limit_value = limit.get("value")
    entity.version += 1
    db.session.flush()
    return entity


def assign(customer_id: str, legal_entity_id: str, type: str = "CONTACT") -> Assignment:
    """Assign a customer to a legal entity and add them to its CONTACT group."""
    if type not in ASSIGNMENT_TYPES:
        raise ServiceError(f"type must be one of {', '.join(ASSIGNMENT_TYPES)}", field="type")
    if db.session.get(LegalEntity, legal_entity_id) is None:
        raise ServiceError("legal entity not found", status=404, field="legal_entity_id")
    if db.session.get(Customer, customer_id) is None:
        raise ServiceError("customer not found", status=404, field="customer_id")
    if db.session.get(Assignment, (customer_id, legal_entity_id)) is not None:
        raise ServiceError("already assigned", status=409)
    assignment = Assignment(customer_id=customer_id, legal_entity_id=legal_entity_id, type=type)
    db.session.add(assignment)
    db.session.flush()
    add_member(group_of(legal_entity_id, "CONTACT").id, customer_id)
    return assignment


def set_assignment_type(customer_id: str, legal_entity_id: str, type: str) -> Assignment:
    """Change what a customer is to an entity (PRIMARY, BILLING, LOGISTICS, CONTACT)."""
    if type not in ASSIGNMENT_TYPES:
        raise ServiceError(f"type must be one of {', '.join(ASSIGNMENT_TYPES)}", field="type")
    assignment = db.session.get(Assignment, (customer_id, legal_entity_id))
    if assignment is None:
        raise ServiceError("not assigned", status=404)
    assignment.type = type
    db.session.flush()
    return assignment


def remove_assignment(customer_id: str, legal_entity_id: str, *, actor) -> None:
    """Unassign a customer from an entity (and so from its groups); tokens acting there stop."""
    assignment = found(Assignment, (customer_id, legal_entity_id), "not assigned")
    fence_issuance([customer_id])
    customer = db.session.get(Customer, customer_id)
    if customer.default_legal_entity_id == legal_entity_id:
        customer.default_legal_entity_id = None
    db.session.delete(assignment)  # group memberships go with it (composite foreign key)
    db.session.flush()
    deny_all(live_sessions([customer_id], [legal_entity_id]), "assignment_removed")
    record(
        "assignment.removed",
        actor,
        customer_id=customer_id,
        target=legal_entity_id,
        legal_entity_id=legal_entity_id,
    )


def _subtree(legal_entity_id: str) -> list[str]:
    ids, frontier = [legal_entity_id], [legal_entity_id]
    while frontier:
        frontier = list(
            db.session.scalars(select(LegalEntity.id).where(LegalEntity.parent_id.in_(frontier)))
        )
        ids.extend(frontier)
    return ids


def delete_legal_entity(legal_entity_id: str, *, cascade: bool = False, actor) -> list[str]:
    """Delete an entity (with its subsidiaries if `cascade`); sessions acting there stop now.

    Refused (409) while it has subsidiaries or assigned customers, unless `cascade`.
    Returns the deleted entity ids.
    """
    found(LegalEntity, legal_entity_id, "legal entity not found")
    ids = _subtree(legal_entity_id)
    # Locked, so that nobody is assigned to one of them unseen while this runs (an assignment
    # row's foreign key waits for its entity's row).
    db.session.execute(
        select(LegalEntity.id).where(LegalEntity.id.in_(ids)).with_for_update()
    ).all()
    members = set(
        db.session.scalars(
            select(Assignment.customer_id).where(Assignment.legal_entity_id.in_(ids))
        )
    )
    if not cascade and (len(ids) > 1 or members):
        raise ServiceError(
            "the legal entity has subsidiaries or assigned customers; use cascade", status=409
        )
    fence_issuance(members)
    deny_all(live_sessions(members, ids), "legal_entity_deleted")
    # Deepest first: a parent cannot go while a subsidiary points at it.
    for entity_id in reversed(ids):
        db.session.delete(db.session.get(LegalEntity, entity_id))
        db.session.flush()
    record("legal_entity.deleted", actor, target=legal_entity_id, deleted=ids)
    return ids
