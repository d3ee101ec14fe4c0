"""Company self-service: what a customer may do to their own company's members and groups.

Every function acts for an `Actor`, a customer acting for one legal entity E (their access
token's `legal_entity_id`), and holds these rules, whichever surface calls it (the
/self-service API today, an Emporix-compatible IAM layer later):

- confinement: nothing outside E, ever. Groups are E's own (never a parent's, a subsidiary's
  or a tenant-wide one) and the customers touched are E's members (an invitation's target
  excepted). Anything else is "not found", so that nothing about a neighbour leaks;
- no escalation: an actor changes memberships only (never a group's scopes nor the catalogue),
  and adds a member (themself included) to, or takes one out of, only a group whose scopes are
  all among the actor's own effective scopes in E;
- the last active ADMIN of E stays (409): no company locks itself out;
- the effect on others is the admin API's: the same service functions, so
  scopes change at the member's next refresh and their live access tokens are deny-listed;
- consent, and no enumeration: an invitation assigns nobody; the invitee accepts (a new
  address by activating, an existing customer on the hosted join page, signed in). Until
  then E sees the same for either (the answer, its invitations, members and audit events),
  and E's audit feed never names another company.

Functions add to the caller's transaction and never commit. Each change records its audit
event with the customer as actor and E as the event's legal entity, save the two that would
tell E that an address has an account or has none (`customer.invited`, `invitation.declined`):
those are the seller's alone, under no entity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import audit, entitlements, notifications
from ..extensions import db
from ..kv import StoreUnavailable
from ..models import (
    Assignment,
    AuditEvent,
    Customer,
    CustomerGroup,
    GroupMember,
    GroupScope,
    Invitation,
    LegalEntity,
    new_id,
    utcnow,
)
from ..scopes import effective_scopes, split_scopes
from ..security import hash_password, hash_token, new_token
from . import customers, legal_entities
from .base import ServiceError
from .groups import add_member, remove_membership

READ_OWN = "customer.customer_read_own"
MANAGE_OWN = "customer.customer_manage_own"
ASSIGN_OWN = "iam.assignment_create_own"
UNASSIGN_OWN = "iam.assignment_delete_own"

MIN_PASSWORD_LENGTH = 8
#: Tries of an invitation that loses a unique-constraint race (each after the winner commits).
RACE_ATTEMPTS = 3
MAX_PASSWORD_LENGTH = 1024
#: The hosted page an existing customer's invitation links to (api/frontdoor.py), under the
#: issuer: it needs the hosted login's browser session.
JOIN_PATH = "/invitations/join"
#: What of an audit event's details the company it happened in may read: facts about the
#: event in E. Any other key may name another company (`session.switched`'s `previous`, the
#: entity the session came from), so a company's feed leaves it out, whatever the event.
COMPANY_DETAILS = frozenset({"client_id", "name", "scopes", "type"})


class Forbidden(ServiceError):
    """The actor may not do this (403): a scope is missing, or the change would escalate."""

    def __init__(self, message: str, scope: str | None = None) -> None:
        super().__init__(message, status=403)
        self.scope = scope


class RateLimited(ServiceError):
    """Too many invitations from one inviter (429); `retry_after` in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many invitations: retry later.", status=429)
        self.retry_after = max(1, retry_after)


class Unavailable(ServiceError):
    """The store that counts invitations is down (503)."""

    def __init__(self) -> None:
        super().__init__("The rate limiter is unavailable. Retry shortly.", status=503)


@dataclass(frozen=True)
class Actor:
    """A customer acting for legal entity `legal_entity_id` with a token holding `scopes`,
    in a session whose ceiling is `ceiling`."""

    customer_id: str
    legal_entity_id: str
    scopes: frozenset[str]
    ceiling: frozenset[str]

    @property
    def audit_actor(self) -> tuple[str, str]:
        """(actor_type, actor_id) for audit events and lifecycle functions."""
        return ("customer", self.customer_id)


@dataclass(frozen=True)
class InvitationResult:
    """What an invitation did: `created` False when it repeated an earlier one unchanged (or
    found a member). No customer: the company learns of one only once they accept."""

    invitation: Invitation
    created: bool


# -- who the actor is, now --------------------------------------------------------------------


def held_scopes(actor: Actor) -> frozenset[str]:
    """The actor's own scopes in E now: the token's, narrowed to what the token endpoint's own
    function gives the actor's session today (a removed membership counts at once)."""
    _, grants = entitlements.of(actor.customer_id)
    baseline = split_scopes(current_app.config["SETTINGS"].baseline_scopes)
    current = split_scopes(effective_scopes(grants, actor.legal_entity_id, actor.ceiling, baseline))
    return actor.scopes & current


def _authorize(actor: Actor, scope: str) -> frozenset[str]:
    """The actor is active, still a member of E, and holds `scope` there; returns their scopes."""
    customer = db.session.get(Customer, actor.customer_id)
    if customer is None or customer.status != "active":
        raise Forbidden("The customer is not active.")
    if db.session.get(Assignment, (actor.customer_id, actor.legal_entity_id)) is None:
        raise Forbidden("The customer is no longer assigned to the token's legal entity.")
    held = held_scopes(actor)
    if scope not in held:
        raise Forbidden(f"The access token lacks the {scope} scope.", scope)
    return held


def _group_of_entity(actor: Actor, group_id: str, *, lock: bool = False) -> CustomerGroup:
    group = db.session.get(CustomerGroup, group_id, with_for_update=lock)
    # Another entity's group, or a tenant-wide one, is not there for this actor.
    if group is None or group.legal_entity_id != actor.legal_entity_id:
        raise ServiceError("group not found", status=404)
    return group


def _member(actor: Actor, customer_id: str) -> Assignment:
    assignment = db.session.get(Assignment, (customer_id, actor.legal_entity_id))
    if assignment is None:
        raise ServiceError("member not found", status=404)
    return assignment


def _scopes_of(group_id: str) -> frozenset[str]:
    return frozenset(
        db.session.scalars(select(GroupScope.scope).where(GroupScope.group_id == group_id))
    )


def _within(held: frozenset[str], group: CustomerGroup) -> None:
    """No escalation: the group's scopes are all the actor's own."""
    beyond = _scopes_of(group.id) - held
    if beyond:
        raise Forbidden(
            "The group holds scopes the actor does not hold: " + " ".join(sorted(beyond))
        )


def _keep_last_admin(actor: Actor, customer_id: str) -> None:
    """409 if `customer_id` is the only active member of E's ADMIN group."""
    admin = db.session.scalars(
        select(CustomerGroup)
        .where(
            CustomerGroup.legal_entity_id == actor.legal_entity_id,
            CustomerGroup.code == "ADMIN",
            CustomerGroup.predefined.is_(True),
        )
        .with_for_update()  # two admins removing each other: one waits, then counts one
    ).first()
    if admin is None or db.session.get(GroupMember, (admin.id, customer_id)) is None:
        return
    others = db.session.scalar(
        select(func.count())
        .select_from(GroupMember)
        .join(Customer, Customer.id == GroupMember.customer_id)
        .where(
            GroupMember.group_id == admin.id,
            GroupMember.customer_id != customer_id,
            Customer.status == "active",
        )
    )
    if not others:
        raise ServiceError("the last admin of the legal entity cannot be removed", status=409)


def _record(actor: Actor, action: str, **fields) -> None:
    kind, who = actor.audit_actor
    audit.record(
        action, actor_type=kind, actor_id=who, legal_entity_id=actor.legal_entity_id, **fields
    )


# -- reads ------------------------------------------------------------------------------------


def members(actor: Actor) -> list[dict]:
    """E's members: id, email, status, assignment type and their groups in E, by email."""
    _authorize(actor, READ_OWN)
    entity = actor.legal_entity_id
    groups: dict[str, list[str]] = {}
    for customer_id, group_id in db.session.execute(
        select(GroupMember.customer_id, GroupMember.group_id)
        .where(GroupMember.legal_entity_id == entity)
        .order_by(GroupMember.group_id)
    ):
        groups.setdefault(customer_id, []).append(group_id)
    rows = db.session.execute(
        select(Customer, Assignment.type)
        .join(Assignment, Assignment.customer_id == Customer.id)
        .where(Assignment.legal_entity_id == entity)
        .order_by(Customer.email)
    )
    return [
        {
            "id": customer.id,
            "email": customer.email,
            "name": None,
            "status": customer.status,
            "assignment_type": type_,
            "groups": groups.get(customer.id, []),
        }
        for customer, type_ in rows
    ]


def groups(actor: Actor) -> list[tuple[CustomerGroup, list[str]]]:
    """E's own groups (no tenant-wide ones) with their scopes, by id."""
    _authorize(actor, READ_OWN)
    rows = db.session.scalars(
        select(CustomerGroup)
        .where(CustomerGroup.legal_entity_id == actor.legal_entity_id)
        .order_by(CustomerGroup.id)
    )
    return [(group, sorted(_scopes_of(group.id))) for group in rows]


def audit_events_query(actor: Actor):
    """A query of E's audit events (and only E's), for the caller to page through; each shown
    with its `company_details`."""
    _authorize(actor, READ_OWN)
    return select(AuditEvent).where(AuditEvent.legal_entity_id == actor.legal_entity_id)


def company_details(event: AuditEvent) -> dict:
    """The details of one of E's events that E's company may read (COMPANY_DETAILS)."""
    return {k: v for k, v in (event.details or {}).items() if k in COMPANY_DETAILS}


# -- group membership -------------------------------------------------------------------------


def add_to_group(actor: Actor, group_id: str, customer_id: str) -> tuple[GroupMember, bool]:
    """Add one of E's members to one of E's groups, within the actor's own scopes; returns the
    membership and whether it is new (adding again changes nothing)."""
    held = _authorize(actor, ASSIGN_OWN)
    group = _group_of_entity(actor, group_id)
    _member(actor, customer_id)
    _within(held, group)
    existing = db.session.get(GroupMember, (group.id, customer_id))
    if existing is not None:
        return existing, False
    member = add_member(group.id, customer_id)
    _record(actor, "group.member_added", customer_id=customer_id, target=group.id)
    return member, True


def remove_from_group(actor: Actor, group_id: str, customer_id: str) -> None:
    """Take one of E's members out of one of E's groups; never the last ADMIN."""
    held = _authorize(actor, UNASSIGN_OWN)
    group = _group_of_entity(actor, group_id)
    _member(actor, customer_id)
    _within(held, group)
    if group.code == "ADMIN" and group.predefined:
        _keep_last_admin(actor, customer_id)
    remove_membership(group.id, customer_id, actor=actor.audit_actor)


def unassign(actor: Actor, customer_id: str) -> None:
    """Unassign a member from E (and so from all of E's groups); never the last ADMIN."""
    held = _authorize(actor, UNASSIGN_OWN)
    _member(actor, customer_id)
    for group_id in db.session.scalars(
        select(GroupMember.group_id).where(
            GroupMember.customer_id == customer_id,
            GroupMember.legal_entity_id == actor.legal_entity_id,
        )
    ).all():
        _within(held, db.session.get(CustomerGroup, group_id))
    _keep_last_admin(actor, customer_id)
    legal_entities.remove_assignment(customer_id, actor.legal_entity_id, actor=actor.audit_actor)


# -- invitations ------------------------------------------------------------------------------


def _normalized_email(email: str) -> str:
    return customers.valid_email(email)


def _count_invitation(actor: Actor) -> None:
    """At most `invitation_rate_limit` invitations per inviting customer and hour; a store that
    cannot count refuses (fail closed: an invitation sends an email)."""
    limit = current_app.config["SETTINGS"].invitation_rate_limit
    try:
        retry_after = current_app.extensions["rate_counter"].over(
            f"invitations:{actor.customer_id}", limit, 3600
        )
    except StoreUnavailable:
        raise Unavailable() from None
    if retry_after:
        raise RateLimited(retry_after)


def invitation_status(invitation: Invitation, now: datetime) -> str:
    """What the inviting company sees of an invitation: `accepted`, `pending` while its link
    works, else `expired`. A declined one reads `expired` too: only an existing customer can
    decline, so telling it apart would tell the company that the address has an account."""
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.declined_at is not None or invitation.expires_at <= now:
        return "expired"
    return "pending"


def invite(actor: Actor, email: str) -> InvitationResult:
    """Invite an email address into E. Nothing is assigned before the invitee accepts: a new
    address becomes an `invited` customer with an activation link, an existing customer gets
    a link to the hosted page where they join or decline, signed in. The company's side
    (this answer, its invitations, members and audit events) is the same either way, so that
    no company admin can learn which addresses have accounts. Repeating an invitation that
    still stands changes nothing; one that expired or was declined gets a new link."""
    _authorize(actor, MANAGE_OWN)
    email = _normalized_email(email)
    _count_invitation(actor)
    # An identical invitation that races this one and commits first is there on the next
    # attempt, which answers as its repeat would. The race shows either as the unique email or
    # (E, email) refusing our insert, or, under READ COMMITTED, as the directory's own
    # "exists" check (409) seeing the winner's customer after our lookup did not: _invite only
    # creates what its lookup found missing, so a 409 there is a race.
    attempt = 1
    while True:
        try:
            with db.session.begin_nested():
                return _invite(actor, email)
        except (IntegrityError, ServiceError) as exc:
            lost_race = isinstance(exc, IntegrityError) or exc.status == 409
            if not lost_race or attempt == RACE_ATTEMPTS:
                raise
            attempt += 1


def _assigned(customer_id: str, legal_entity_id: str) -> bool:
    return db.session.get(Assignment, (customer_id, legal_entity_id)) is not None


def _invite(actor: Actor, email: str) -> InvitationResult:
    now = utcnow()
    entity = db.session.get(LegalEntity, actor.legal_entity_id)
    invitation = db.session.scalars(
        select(Invitation)
        .where(Invitation.legal_entity_id == entity.id, Invitation.email == email)
        .with_for_update()
    ).first()
    customer = db.session.scalars(
        select(Customer).where(Customer.email == email).with_for_update()
    ).first()
    if invitation is not None and customer is not None and invitation.customer_id == customer.id:
        status = invitation_status(invitation, now)
        if status == "pending" or (status == "accepted" and _assigned(customer.id, entity.id)):
            return InvitationResult(invitation, created=False)
    if customer is not None and customer.status != "invited" and _assigned(customer.id, entity.id):
        # A member already (the company lists them): nothing to accept or announce; the
        # record says so.
        if invitation is None:
            invitation = Invitation(id=new_id("inv"), legal_entity_id=entity.id, email=email)
            db.session.add(invitation)
        invitation.customer_id = customer.id
        invitation.invited_by = actor.customer_id
        invitation.created_at = invitation.expires_at = invitation.accepted_at = now
        invitation.token_hash = invitation.declined_at = None
        db.session.flush()
        return InvitationResult(invitation, created=False)
    if customer is None:
        customer = customers.create_customer(email, None)
        customer.status = "invited"
        # Filed under no entity: E's feed must not show that this address was new.
        audit.record(
            "customer.invited",
            actor_type="customer",
            actor_id=actor.customer_id,
            customer_id=customer.id,
            target=entity.id,
        )
    if invitation is None:
        invitation = Invitation(id=new_id("inv"), legal_entity_id=entity.id, email=email)
        db.session.add(invitation)
    invitation.customer_id = customer.id
    invitation.invited_by = actor.customer_id
    invitation.created_at = now
    invitation.expires_at = now + timedelta(seconds=current_app.config["SETTINGS"].invitation_ttl)
    invitation.accepted_at = invitation.declined_at = None
    _send_link(invitation, customer, entity)
    db.session.flush()
    # No customer id: an existing customer's would tell them apart from a new address.
    _record(actor, "invitation.created", target=invitation.id)
    return InvitationResult(invitation, created=True)


def _send_link(invitation: Invitation, customer: Customer, entity: LegalEntity) -> None:
    """A new single-use token for `invitation` (only its hash is kept), mailed through the
    outbox: an activation link while the invitee is `invited`, else the join page's."""
    settings = current_app.config["SETTINGS"]
    token = new_token()
    invitation.token_hash = hash_token(token)
    inviter = db.session.get(Customer, invitation.invited_by) if invitation.invited_by else None
    if customer.status == "invited":
        send, url = notifications.invitation_to_activate, settings.activation_url
    else:
        send, url = notifications.invitation_to_join, settings.issuer + JOIN_PATH
    send(
        invitation.email,
        entity.name,
        inviter.email if inviter is not None else None,
        f"{url}?token={token}",
        f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC",
    )


def invitations(actor: Actor) -> list[Invitation]:
    """E's invitations, by email; the company reads their `invitation_status`."""
    _authorize(actor, READ_OWN)
    return list(
        db.session.scalars(
            select(Invitation)
            .where(Invitation.legal_entity_id == actor.legal_entity_id)
            .order_by(Invitation.email)
        )
    )


def withdraw_invitation(actor: Actor, invitation_id: str) -> None:
    """Forget one of E's invitations: its link stops working. An accepted one only loses its
    record (a member leaves through `unassign`)."""
    _authorize(actor, MANAGE_OWN)
    invitation = db.session.get(Invitation, invitation_id, with_for_update=True)
    if invitation is None or invitation.legal_entity_id != actor.legal_entity_id:
        raise ServiceError("invitation not found", status=404)
    db.session.delete(invitation)
    _record(actor, "invitation.withdrawn", target=invitation_id)


# -- the invitee's side: a link's token is theirs alone ----------------------------------------


def _gone() -> ServiceError:
    """One answer for every link that does not work, whatever the reason."""
    return ServiceError("invitation not found, used or expired", status=404, field="token")


def _standing(token: str, *, lock: bool) -> tuple[Invitation, Customer]:
    """The invitation a link's token stands for while it is pending, and its invitee;
    otherwise 404, whatever the reason (`lock`: for the update that accepts it)."""
    query = select(Invitation).where(Invitation.token_hash == hash_token(token))
    invitation = db.session.scalars(query.with_for_update() if lock else query).first()
    if invitation is None or invitation_status(invitation, utcnow()) != "pending":
        raise _gone()
    return invitation, db.session.get(Customer, invitation.customer_id, with_for_update=lock)


def standing_invitation(token: str, *, lock: bool = False) -> tuple[Invitation, Customer]:
    """The invitation an activation token stands for, and its invited customer: pending (not
    used, declined, withdrawn or expired) and the customer still `invited`; otherwise 404,
    whatever the reason (`lock`: for the update that accepts it)."""
    invitation, customer = _standing(token, lock=lock)
    if customer.status != "invited":
        raise _gone()
    return invitation, customer


def invitation_for(token: str, customer_id: str, *, lock: bool = False) -> Invitation:
    """The invitation a join link's token stands for, to the signed-in `customer_id`: pending,
    and theirs; otherwise 404, whatever the reason, so that a link opened by another account
    shows nothing of the invitation."""
    invitation, customer = _standing(token, lock=lock)
    if customer.id != customer_id or customer.status != "active":
        raise _gone()
    return invitation


def _join(invitation: Invitation, customer_id: str) -> None:
    """Accept `invitation`, by activation or on the join page alike: the invitee becomes a
    member of the inviting entity (and of its CONTACT group), the token is spent, and the
    entity's feed records both with the invitee as actor."""
    entity = invitation.legal_entity_id
    fields = {
        "actor_type": "customer",
        "actor_id": customer_id,
        "customer_id": customer_id,
        "legal_entity_id": entity,
    }
    if not _assigned(customer_id, entity):  # an invitation made before 0005 assigned at once
        legal_entities.assign(customer_id, entity)
        audit.record("assignment.created", target=entity, **fields)
    invitation.accepted_at = utcnow()
    invitation.token_hash = None  # single use: the hash is gone with the first use
    audit.record("invitation.accepted", target=invitation.id, **fields)
    db.session.flush()


def accept_invitation(token: str, password: str) -> Customer:
    """Set the password of an invited customer with their activation token, make them
    active and a member of the inviting entity. The token works once, while its invitation
    stands (`standing_invitation`). Their other pending invitations carried activation
    links, which stop working now: each gets a join link instead."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise ServiceError(
            f"the password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            field="password",
        )
    invitation, customer = standing_invitation(token, lock=True)
    customer.password_hash = hash_password(password)
    customer.status = "active"
    customer.version += 1
    _join(invitation, customer.id)
    now = utcnow()
    for other in db.session.scalars(
        select(Invitation)
        .where(
            Invitation.customer_id == customer.id,
            Invitation.id != invitation.id,
            Invitation.token_hash.is_not(None),
        )
        .with_for_update()
    ):
        if invitation_status(other, now) == "pending":
            _send_link(other, customer, db.session.get(LegalEntity, other.legal_entity_id))
    db.session.flush()
    return customer


def join_invitation(token: str, customer_id: str) -> Invitation:
    """The signed-in invitee joins the inviting entity (`_join`), once, while the invitation
    stands (`invitation_for`)."""
    invitation = invitation_for(token, customer_id, lock=True)
    _join(invitation, customer_id)
    return invitation


def decline_invitation(token: str, customer_id: str) -> Invitation:
    """The signed-in invitee turns the invitation down: nothing is assigned, the token is
    spent. Filed under no entity: only an existing customer can decline, and E's feed must
    not tell (the company reads the invitation as `expired`, `invitation_status`)."""
    invitation = invitation_for(token, customer_id, lock=True)
    invitation.declined_at = utcnow()
    invitation.token_hash = None
    audit.record(
        "invitation.declined",
        actor_type="customer",
        actor_id=customer_id,
        customer_id=customer_id,
        target=invitation.id,
    )
    db.session.flush()
    return invitation
