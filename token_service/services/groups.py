"""Customer groups of a legal entity (or tenant-wide), their scopes and their members."""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..models import (
    Assignment,
    CustomerGroup,
    GroupMember,
    GroupScope,
    LegalEntity,
    new_id,
)
from ..revocation import fence_issuance
from .base import ServiceError, found, record
from .catalogue import check_catalogue
from .sessions import deny_all, live_sessions


def group_of(legal_entity_id: str, code: str) -> CustomerGroup:
    group = db.session.scalars(
        select(CustomerGroup).where(
            CustomerGroup.legal_entity_id == legal_entity_id,
            CustomerGroup.code == code,
            CustomerGroup.predefined.is_(True),
        )
    ).first()
    if group is None:
        raise ServiceError(f"{code} group of {legal_entity_id} not found", status=404)
    return group


def create_group(
    name: str, scopes, *, legal_entity_id: str | None = None, code: str = "CUSTOM"
) -> CustomerGroup:
    """A custom group in an entity, or tenant-wide when `legal_entity_id` is None."""
    scopes = set(scopes)
    check_catalogue(scopes)
    if legal_entity_id is not None and db.session.get(LegalEntity, legal_entity_id) is None:
        raise ServiceError("legal entity not found", status=404, field="legal_entity_id")
    group = CustomerGroup(
        id=new_id("grp"), name=name, legal_entity_id=legal_entity_id, code=code, predefined=False
    )
    db.session.add(group)
    db.session.flush()
    db.session.add_all(GroupScope(group_id=group.id, scope=s) for s in sorted(scopes))
    db.session.flush()
    return group


def set_group_scopes(group_id: str, scopes) -> None:
    """Replace a group's scopes; takes effect at the next refresh of its members."""
    scopes = set(scopes)
    check_catalogue(scopes)
    current = set(
        db.session.scalars(select(GroupScope.scope).where(GroupScope.group_id == group_id))
    )
    for name in current - scopes:
        db.session.delete(db.session.get(GroupScope, (group_id, name)))
    db.session.add_all(GroupScope(group_id=group_id, scope=s) for s in sorted(scopes - current))
    db.session.flush()


def set_group_scopes_now(group_id: str, scopes, *, actor: tuple[str, str | None]) -> None:
    """Replace a group's scopes; if any is taken away, members' live tokens where the group
    counts stop now (added scopes show at the next refresh)."""
    # Locked, so that no member joins unseen while this runs (a new member row's foreign key
    # waits for the group's row).
    group = found(CustomerGroup, group_id, "group not found", lock=True)
    held = set(db.session.scalars(select(GroupScope.scope).where(GroupScope.group_id == group_id)))
    members = list(
        db.session.scalars(select(GroupMember.customer_id).where(GroupMember.group_id == group_id))
    )
    taken_away = bool(members) and bool(held - set(scopes))
    if taken_away:
        fence_issuance(members)
    set_group_scopes(group_id, scopes)
    group.version += 1
    if taken_away:
        entities = None if group.legal_entity_id is None else [group.legal_entity_id]
        deny_all(live_sessions(members, entities), "group_scopes_changed")
    record("group.scopes_changed", actor, target=group_id, scopes=sorted(set(scopes)))


def add_member(group_id: str, customer_id: str) -> GroupMember:
    """Add a customer to a group; an entity's group needs the customer assigned to it."""
    group = db.session.get(CustomerGroup, group_id)
    if group is None:
        raise ServiceError("group not found", status=404)
    if (
        group.legal_entity_id is not None
        and db.session.get(Assignment, (customer_id, group.legal_entity_id)) is None
    ):
        raise ServiceError("the customer is not assigned to the group's legal entity", status=409)
    if db.session.get(GroupMember, (group_id, customer_id)) is not None:
        raise ServiceError("already a member", status=409)
    member = GroupMember(
        group_id=group_id, customer_id=customer_id, legal_entity_id=group.legal_entity_id
    )
    db.session.add(member)
    db.session.flush()
    return member


def remove_membership(group_id: str, customer_id: str, *, actor: tuple[str, str | None]) -> None:
    """Take a customer out of a group; their tokens acting where the group counts stop now."""
    member = found(GroupMember, (group_id, customer_id), "not a member of this group")
    group = db.session.get(CustomerGroup, group_id)
    fence_issuance([customer_id])
    db.session.delete(member)
    db.session.flush()
    # A tenant-wide group counts in every entity: every session is affected.
    entities = None if group.legal_entity_id is None else [group.legal_entity_id]
    deny_all(live_sessions([customer_id], entities), "membership_removed")
    record(
        "group.member_removed",
        actor,
        customer_id=customer_id,
        target=group_id,
        legal_entity_id=group.legal_entity_id,
    )


def delete_group(group_id: str) -> None:
    """Delete a custom group that has no members left; predefined groups stay (409)."""
    group = db.session.get(CustomerGroup, group_id)
    if group is None:
        raise ServiceError("group not found", status=404)
    if group.predefined:
        raise ServiceError("predefined groups cannot be deleted", status=409)
    if db.session.scalar(select(GroupMember.customer_id).where(GroupMember.group_id == group_id)):
        raise ServiceError("the group still has members", status=409)
    db.session.delete(group)  # its scopes go with it (foreign key cascade)
    db.session.flush()
