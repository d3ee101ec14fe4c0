"""Changes to who a customer is and where they belong, with their effect on live sessions.

The admin API and the CLI go through these functions, so a change has the same effect whichever
way it is made. Every function works in the caller's transaction (no commit here):
- the next refresh reflects the change (scopes are recomputed from the data at every refresh);
- the affected sessions' live access tokens are deny-listed at once (`revocation.deny_session`):
  every session whose live tokens may carry what was taken away, whichever entity it acts for
  now (a switch leaves the tokens issued before it live);
- blocking a customer, deleting one, changing their password or revoking all their sessions
  signs them out everywhere (`revoke_all_sessions`): every refresh-token family and every
  browser session, so that neither a refresh token nor a sign-in cookie mints tokens again;
- each change first fences the token endpoint (`revocation.fence_issuance`), so that a login
  or refresh racing it either is among the sessions it denies or reads the changed data.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from flask import current_app
from sqlalchemy import exists, or_, select

from . import audit, directory
from .directory import DirectoryError, set_group_scopes
from .extensions import db
from .models import (
    Assignment,
    Customer,
    CustomerGroup,
    GroupMember,
    GroupScope,
    LegalEntity,
    RefreshToken,
    Session,
    utcnow,
)
from .oauth2.browser import browser_session_of, end_browser_session, end_browser_sessions_of
from .revocation import deny_session, fence_issuance, revoke_session

#: Added to the longest access-token lifetime when asking which entities a session issued
#: tokens for: a token's `iat` comes a moment after its refresh-token row's `created_at` (the
#: refresh may wait out a deny-listed second), and clocks of app nodes differ a little.
ISSUED_MARGIN_SECONDS = 60

T = TypeVar("T")


def _live_sessions(customer_ids, legal_entity_ids=None) -> list[Session]:
    """Unrevoked sessions of these customers; with `legal_entity_ids`, those whose live access
    tokens may act for one of these entities: the one the session acts for now, and any it
    issued a token for within the longest access-token lifetime (each refresh-token row
    records the entity and time of the access token issued with it)."""
    query = select(Session).where(
        Session.customer_id.in_(list(customer_ids)), Session.revoked_at.is_(None)
    )
    if legal_entity_ids is not None:
        entities = list(legal_entity_ids)
        window = current_app.config["SETTINGS"].access_token_ttl_max + ISSUED_MARGIN_SECONDS
        issued_there = exists().where(
            RefreshToken.session_id == Session.id,
            RefreshToken.legal_entity_id.in_(entities),
            RefreshToken.created_at >= utcnow() - timedelta(seconds=window),
        )
        query = query.where(or_(Session.legal_entity_id.in_(entities), issued_there))
    return list(db.session.scalars(query))


def _deny(sessions, reason: str) -> None:
    for session in sessions:
        deny_session(session, reason)


def _found(model: type[T], key, message: str, *, lock: bool = False) -> T:
    """The row with this primary key (locked for update with `lock`), or a 404 saying
    `message`."""
    row = db.session.get(model, key, with_for_update=lock)
    if row is None:
        raise DirectoryError(message, status=404)
    return row


def _record(action: str, actor: tuple[str, str | None], **fields) -> None:
    audit.record(action, actor_type=actor[0], actor_id=actor[1], **fields)


def remove_membership(group_id: str, customer_id: str, *, actor: tuple[str, str | None]) -> None:
    """Take a customer out of a group; their tokens acting where the group counts stop now."""
    member = _found(GroupMember, (group_id, customer_id), "not a member of this group")
    group = db.session.get(CustomerGroup, group_id)
    fence_issuance([customer_id])
    db.session.delete(member)
    db.session.flush()
    # A tenant-wide group counts in every entity: every session is affected.
    entities = None if group.legal_entity_id is None else [group.legal_entity_id]
    _deny(_live_sessions([customer_id], entities), "membership_removed")
    _record(
        "group.member_removed",
        actor,
        customer_id=customer_id,
        target=group_id,
        legal_entity_id=group.legal_entity_id,
    )


def set_group_scopes_now(group_id: str, scopes, *, actor: tuple[str, str | None]) -> None:
    """Replace a group's scopes; if any is taken away, members' live tokens where the group
    counts stop now (added scopes show at the next refresh)."""
    # Locked, so that no member joins unseen while this runs (a new member row's foreign key
    # waits for the group's row).
    group = _found(CustomerGroup, group_id, "group not found", lock=True)
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
        _deny(_live_sessions(members, entities), "group_scopes_changed")
    _record("group.scopes_changed", actor, target=group_id, scopes=sorted(set(scopes)))


def remove_assignment(customer_id: str, legal_entity_id: str, *, actor) -> None:
    """Unassign a customer from an entity (and so from its groups); tokens acting there stop."""
    assignment = _found(Assignment, (customer_id, legal_entity_id), "not assigned")
    fence_issuance([customer_id])
    customer = db.session.get(Customer, customer_id)
    if customer.default_legal_entity_id == legal_entity_id:
        customer.default_legal_entity_id = None
    db.session.delete(assignment)  # group memberships go with it (composite foreign key)
    db.session.flush()
    _deny(_live_sessions([customer_id], [legal_entity_id]), "assignment_removed")
    _record(
        "assignment.removed",
        actor,
        customer_id=customer_id,
        target=legal_entity_id,
        legal_entity_id=legal_entity_id,
    )


def revoke_all_sessions(customer_id: str, reason: str, *, actor) -> int:
    """Sign a customer out everywhere: every refresh-token family is revoked (its access tokens
    stop now) and every browser session ends (its cookie signs nobody in, so `prompt=none`
    answers `login_required`). Returns how many refresh-token families were live."""
    fence_issuance([customer_id])  # before listing: a login racing this is listed or refused
    sessions = _live_sessions([customer_id])
    for session in sessions:
        revoke_session(session, reason, actor_type=actor[0], actor_id=actor[1])
    end_browser_sessions_of(customer_id, reason, actor=actor)
    return len(sessions)


def revoke_one_session(session: Session, reason: str, *, actor) -> None:
    """Revoke one refresh-token family and end the browser session it was born from, if any:
    that sign-in cookie would otherwise get the device a new session with `prompt=none`."""
    revoke_session(session, reason, actor_type=actor[0], actor_id=actor[1])
    born_from = browser_session_of(session.id)
    if born_from is not None and born_from.ended_at is None:
        end_browser_session(born_from, reason, actor=actor)


def update_customer(customer_id: str, changes: dict, *, actor) -> Customer:
    """Change a customer's email, password or default entity (directory.update_customer);
    a new or removed password signs them out everywhere, as a reset must."""
    customer = directory.update_customer(customer_id, changes)
    if "password" in changes:
        revoke_all_sessions(customer_id, "password_changed", actor=actor)
    return customer


def delete_customer(customer_id: str, *, actor) -> Customer:
    """Delete a customer, signed out everywhere first so their access tokens stop at once."""
    customer = _found(Customer, customer_id, "customer not found")
    revoke_all_sessions(customer_id, "customer_deleted", actor=actor)
    db.session.delete(customer)  # assignments, memberships and sessions go with it
    db.session.flush()
    return customer


def block_customer(customer_id: str, *, actor) -> None:
    """Block a customer: signed out everywhere, no new login until unblocked."""
    customer = _found(Customer, customer_id, "customer not found")
    fence_issuance([customer_id])
    customer.status = "blocked"
    customer.version += 1
    revoke_all_sessions(customer_id, "customer_blocked", actor=actor)
    _record("customer.blocked", actor, customer_id=customer_id)


def unblock_customer(customer_id: str, *, actor) -> None:
    """Let a blocked customer log in again (revoked sessions and ended browser sessions stay
    so: they sign in anew)."""
    customer = _found(Customer, customer_id, "customer not found")
    customer.status = "active"
    customer.version += 1
    _record("customer.unblocked", actor, customer_id=customer_id)


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
    _found(LegalEntity, legal_entity_id, "legal entity not found")
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
        raise DirectoryError(
            "the legal entity has subsidiaries or assigned customers; use cascade", status=409
        )
    fence_issuance(members)
    _deny(_live_sessions(members, ids), "legal_entity_deleted")
    # Deepest first: a parent cannot go while a subsidiary points at it.
    for entity_id in reversed(ids):
        db.session.delete(db.session.get(LegalEntity, entity_id))
        db.session.flush()
    _record("legal_entity.deleted", actor, target=legal_entity_id, deleted=ids)
    return ids
