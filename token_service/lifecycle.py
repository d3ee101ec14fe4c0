"""Changes to who a customer is and where they belong, with their effect on live sessions.

The admin API and the CLI go through these functions, so a change has the same effect whichever
way it is made. Every function works in the caller's transaction (no commit here):
- the next refresh reflects the change (scopes are recomputed from the data at every refresh);
- the affected sessions' live access tokens are deny-listed at once (`revocation.deny_session`);
- blocking a customer revokes every session.
"""

from __future__ import annotations

from sqlalchemy import select

from . import audit
from .directory import DirectoryError
from .extensions import db
from .models import Assignment, Customer, CustomerGroup, GroupMember, LegalEntity, Session
from .revocation import deny_session, revoke_session


def _live_sessions(customer_ids, legal_entity_ids=None) -> list[Session]:
    """Unrevoked sessions of these customers, optionally only those acting for these entities."""
    query = select(Session).where(
        Session.customer_id.in_(list(customer_ids)), Session.revoked_at.is_(None)
    )
    if legal_entity_ids is not None:
        query = query.where(Session.legal_entity_id.in_(list(legal_entity_ids)))
    return list(db.session.scalars(query))


def _deny(sessions, reason: str) -> None:
    for session in sessions:
        deny_session(session, reason)


def remove_membership(group_id: str, customer_id: str, *, actor: tuple[str, str | None]) -> None:
    """Take a customer out of a group; their tokens acting where the group counts stop now."""
    member = db.session.get(GroupMember, (group_id, customer_id))
    if member is None:
        raise DirectoryError("not a member of this group", status=404)
    group = db.session.get(CustomerGroup, group_id)
    db.session.delete(member)
    db.session.flush()
    # A tenant-wide group counts in every entity: every session is affected.
    entities = None if group.legal_entity_id is None else [group.legal_entity_id]
    _deny(_live_sessions([customer_id], entities), "membership_removed")
    audit.record(
        "group.member_removed",
        actor_type=actor[0],
        actor_id=actor[1],
        customer_id=customer_id,
        target=group_id,
        legal_entity_id=group.legal_entity_id,
    )


def set_group_scopes_now(group_id: str, scopes, *, actor: tuple[str, str | None]) -> None:
    """Replace a group's scopes; members' live tokens where the group counts stop now."""
    from .directory import set_group_scopes

    group = db.session.get(CustomerGroup, group_id)
    if group is None:
        raise DirectoryError("group not found", status=404)
    set_group_scopes(group_id, scopes)
    group.version += 1
    members = list(
        db.session.scalars(select(GroupMember.customer_id).where(GroupMember.group_id == group_id))
    )
    if members:
        entities = None if group.legal_entity_id is None else [group.legal_entity_id]
        _deny(_live_sessions(members, entities), "group_scopes_changed")
    audit.record(
        "group.scopes_changed",
        actor_type=actor[0],
        actor_id=actor[1],
        target=group_id,
        scopes=sorted(set(scopes)),
    )


def remove_assignment(customer_id: str, legal_entity_id: str, *, actor) -> None:
    """Unassign a customer from an entity (and so from its groups); tokens acting there stop."""
    assignment = db.session.get(Assignment, (customer_id, legal_entity_id))
    if assignment is None:
        raise DirectoryError("not assigned", status=404)
    customer = db.session.get(Customer, customer_id)
    if customer.default_legal_entity_id == legal_entity_id:
        customer.default_legal_entity_id = None
    db.session.delete(assignment)  # group memberships go with it (composite foreign key)
    db.session.flush()
    _deny(_live_sessions([customer_id], [legal_entity_id]), "assignment_removed")
    audit.record(
        "assignment.removed",
        actor_type=actor[0],
        actor_id=actor[1],
        customer_id=customer_id,
        target=legal_entity_id,
        legal_entity_id=legal_entity_id,
    )


def block_customer(customer_id: str, *, actor) -> None:
    """Block a customer: every session is revoked and its access tokens stop now."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise DirectoryError("customer not found", status=404)
    customer.status = "blocked"
    customer.version += 1
    for session in _live_sessions([customer_id]):
        revoke_session(session, "customer_blocked", actor_type=actor[0], actor_id=actor[1])
    audit.record(
        "customer.blocked", actor_type=actor[0], actor_id=actor[1], customer_id=customer_id
    )


def unblock_customer(customer_id: str, *, actor) -> None:
    """Let a blocked customer log in again (revoked sessions stay revoked)."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise DirectoryError("customer not found", status=404)
    customer.status = "active"
    customer.version += 1
    audit.record(
        "customer.unblocked", actor_type=actor[0], actor_id=actor[1], customer_id=customer_id
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
    entity = db.session.get(LegalEntity, legal_entity_id)
    if entity is None:
        raise DirectoryError("legal entity not found", status=404)
    ids = _subtree(legal_entity_id)
    members = list(
        db.session.scalars(
            select(Assignment.customer_id).where(Assignment.legal_entity_id.in_(ids))
        )
    )
    if not cascade and (len(ids) > 1 or members):
        raise DirectoryError(
            "the legal entity has subsidiaries or assigned customers; use cascade", status=409
        )
    sessions = list(
        db.session.scalars(
            select(Session).where(Session.legal_entity_id.in_(ids), Session.revoked_at.is_(None))
        )
    )
    _deny(sessions, "legal_entity_deleted")
    # Deepest first: a parent cannot go while a subsidiary points at it.
    for entity_id in reversed(ids):
        db.session.delete(db.session.get(LegalEntity, entity_id))
        db.session.flush()
    audit.record(
        "legal_entity.deleted",
        actor_type=actor[0],
        actor_id=actor[1],
        target=legal_entity_id,
        deleted=ids,
    )
    return ids
