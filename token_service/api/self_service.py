"""/self-service: a company's own admins manage its members and groups (services/company.py).

Authorized by a customer access token, checked as introspection checks it (signature, expiry,
deny-list, session, customer status, assignment), and confined to the token's legal entity.
This module parses, authorizes and renders; the rules live in `company`. Errors are the admin
API's `{"error", "message"}`. Each request is one transaction: a write commits, a read rolls
back, an error rolls everything back.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal

from flask import Blueprint, current_app, g, jsonify
from pydantic import Field

from .. import notifications
from ..extensions import db
from ..inputs import text_problem
from ..models import AuditEvent, Customer, Session
from ..oauth2.introspect import TemporarilyUnavailable
from ..scopes import split_scopes
from ..services import company
from .admin import errors as admin_errors
from .admin import representations as rep
from .admin.auth import bearer_token
from .admin.errors import ApiError, error_response
from .admin.query import PAGE_PARAMS, Param, page
from .admin.routing import MAX_ID_LENGTH
from .admin.schema import Body, Email, Representation, Time, text, validated

bp = Blueprint("self_service", __name__, url_prefix="/self-service")
admin_errors.register(bp)
REALM = "token-service self-service"
TAG = "Self-service"


class InvitationCreate(Body):
    email: Annotated[Email, Field(examples=["carol@acme.test"])]


class InvitationAccept(Body):
    token: Annotated[text(128), Field(description="From the invitation's link.")]
    password: Annotated[
        text(company.MAX_PASSWORD_LENGTH, min_length=company.MIN_PASSWORD_LENGTH),
        Field(description="The new password."),
    ]


class SelfServiceMember(Representation):
    """A member of the token's legal entity."""

    id: str
    email: str
    name: Annotated[str | None, Field(description="Null until customers have names.")]
    status: Literal["active", "blocked", "invited"]
    assignment_type: Literal["PRIMARY", "BILLING", "LOGISTICS", "CONTACT"]
    groups: Annotated[list[str], Field(description="Ids of the member's groups in the entity.")]


class SelfServiceMemberList(Representation):
    """All of them."""

    items: list[SelfServiceMember]


class SelfServiceGroupList(Representation):
    """All of them."""

    items: list[rep.Group]


class Invitation(Representation):
    """An invitation of an email address into the token's legal entity: the same for an
    address that has an account and one that has none (no customer until accepted)."""

    id: str
    email: str
    legal_entity_id: str
    status: Annotated[
        Literal["pending", "accepted", "expired"],
        Field(
            description="pending: its link works; accepted: the invitee is a member (they "
            "accepted, or were one already); expired: the link no longer works (it expired or "
            "was turned down): inviting again sends a new one."
        ),
    ]
    created_at: Time
    expires_at: Time


class InvitationList(Representation):
    """All of them."""

    items: list[Invitation]


class SelfServiceCustomer(Representation):
    """The activated customer."""

    id: str
    email: str
    status: Literal["active"]


@dataclass(frozen=True)
class Operation:
    """One documented self-service endpoint (rendered by api/openapi.py)."""

    method: str
    rule: str
    endpoint: str
    summary: str
    scope: str | None  # None: no access token (accepting an invitation)
    responses: dict[int, type[Representation] | None]
    body: type[Body] | None = None
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    description: str = ""
    tag: str = TAG
    write: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "write", self.method != "GET")

    @property
    def path(self) -> str:
        return "/self-service" + re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", self.rule)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"<(?:[a-z]+:)?(\w+)>", self.rule)


OPERATIONS: list[Operation] = []


def _challenge(error: str | None = None, description: str | None = None) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts += [f'error="{error}"', f'error_description="{description}"']
    return "Bearer " + ", ".join(parts)


def customer_actor() -> company.Actor:
    """The customer the request's bearer token acts for, or a 401/403."""
    token = bearer_token()
    try:
        claims = current_app.extensions["introspection"].live_access_token(token)
    except TemporarilyUnavailable:
        raise ApiError(
            503,
            "temporarily_unavailable",
            "Revocation state is unavailable. Retry shortly.",
            headers={"Retry-After": "1"},
        ) from None
    if claims is None:
        message = "The access token is invalid, expired or revoked."
        raise ApiError(
            401,
            "invalid_token",
            message,
            headers={"WWW-Authenticate": _challenge("invalid_token", message)},
        )
    sid, entity = claims.get("sid"), claims.get("legal_entity_id")
    session = db.session.get(Session, sid) if isinstance(sid, str) else None
    if session is None or session.customer_id != claims.get("sub"):
        raise ApiError(403, "forbidden", "Self-service takes a customer's access token.")
    if not isinstance(entity, str):
        raise ApiError(
            403,
            "forbidden",
            "The access token acts for no legal entity: refresh with legal_entity_id.",
        )
    return company.Actor(
        customer_id=session.customer_id,
        legal_entity_id=entity,
        scopes=split_scopes(claims.get("scope")),
        ceiling=split_scopes(session.scope),
    )


def operation(method: str, rule: str, *, summary: str, scope: str | None, **spec) -> Callable:
    """Declare a self-service endpoint: document it, authenticate the customer into `g.actor`
    (unless `scope` is None), run the view, commit a write or roll back a read."""

    def decorator(view: Callable) -> Callable:
        op = Operation(
            method,
            rule,
            view.__name__,
            summary,
            scope,
            description=(view.__doc__ or "").strip(),
            **spec,
        )
        OPERATIONS.append(op)

        @functools.wraps(view)
        def wrapper(**kwargs):
            if scope is not None:
                g.actor = customer_actor()
            for name, value in kwargs.items():
                if len(value) > MAX_ID_LENGTH or text_problem(value):
                    raise ApiError.of(404, f"{name} not found")
            result = view(**kwargs)
            if op.write:
                db.session.commit()
            else:
                db.session.rollback()
            return result

        bp.add_url_rule(rule, view.__name__, wrapper, methods=[method])
        return wrapper

    return decorator


@bp.errorhandler(company.Forbidden)
def forbidden(error: company.Forbidden):
    db.session.rollback()
    headers = {}
    if error.scope:
        challenge = _challenge("insufficient_scope", str(error)) + f', scope="{error.scope}"'
        headers["WWW-Authenticate"] = challenge
    code = "insufficient_scope" if error.scope else "forbidden"
    return error_response(ApiError(403, code, str(error), headers=headers))


@bp.errorhandler(company.RateLimited)
def rate_limited(error: company.RateLimited):
    db.session.rollback()
    headers = {"Retry-After": str(error.retry_after)}
    return error_response(ApiError(429, "too_many_requests", str(error), headers=headers))


@bp.errorhandler(company.Unavailable)
def unavailable(error: company.Unavailable):
    db.session.rollback()
    headers = {"Retry-After": "1"}
    return error_response(ApiError(503, "temporarily_unavailable", str(error), headers=headers))


def _json(body: dict, status: int = 200):
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _no_content():
    return "", 204, {"Cache-Control": "no-store"}


def _invitation(invitation: company.Invitation, now: datetime) -> dict:
    return Invitation(
        id=invitation.id,
        email=invitation.email,
        legal_entity_id=invitation.legal_entity_id,
        status=company.invitation_status(invitation, now),
        created_at=rep.iso(invitation.created_at),
        expires_at=rep.iso(invitation.expires_at),
    ).model_dump()


def _audit_event(row: AuditEvent) -> dict:
    return {**rep.audit_event(row), "details": company.company_details(row)}


# -- routes -----------------------------------------------------------------------------------


@operation(
    "GET",
    "/members",
    summary="List the members of the token's legal entity",
    scope=company.READ_OWN,
    responses={200: SelfServiceMemberList},
)
def list_members():
    """Ordered by email; `groups` are the member's groups in this entity."""
    return _json(SelfServiceMemberList(items=company.members(g.actor)).model_dump())


@operation(
    "POST",
    "/invitations",
    summary="Invite an email address into the token's legal entity",
    scope=company.MANAGE_OWN,
    body=InvitationCreate,
    responses={201: Invitation, 200: Invitation},
    errors=(409, 429),
)
def create_invitation():
    """The invitee gets a single-use link by email (status `pending`) and becomes a member
    (joining the CONTACT group) only by accepting it: a new address by activating an
    account, an existing customer by joining on a signed-in page (or declining). The answer
    is the same for both. Repeating a standing invitation answers 200 and sends nothing; one
    whose link no longer works gets a new link (201); a member already: 200, `accepted`.
    Rate-limited per inviter (429 with `Retry-After`)."""
    body = validated(InvitationCreate)
    result = company.invite(g.actor, body["email"])
    answer = _invitation(result.invitation, company.utcnow())
    db.session.commit()
    if result.created:
        notifications.deliver_pending()  # after the commit: a mail never announces a rollback
    return _json(answer, 201 if result.created else 200)


@operation(
    "POST",
    "/invitations/accept",
    summary="Accept an invitation: set the password, activate the account",
    scope=None,
    body=InvitationAccept,
    responses={200: SelfServiceCustomer},
    errors=(404,),
)
def accept_invitation():
    """No access token: the link's token is the credential. It works once, before it
    expires, while the invitation stands (404 otherwise, whatever the reason)."""
    body = validated(InvitationAccept)
    customer: Customer = company.accept_invitation(body["token"], body["password"])
    activated = SelfServiceCustomer(id=customer.id, email=customer.email, status=customer.status)
    db.session.commit()
    notifications.deliver_pending()  # the join links of the customer's other invitations
    return _json(activated.model_dump())


@operation(
    "GET",
    "/invitations",
    summary="List the invitations into the token's legal entity",
    scope=company.READ_OWN,
    responses={200: InvitationList},
)
def list_invitations():
    """Ordered by email. An invitee appears among the members only once they accept."""
    now = company.utcnow()
    items = [_invitation(invitation, now) for invitation in company.invitations(g.actor)]
    return _json(InvitationList(items=items).model_dump())


@operation(
    "DELETE",
    "/invitations/<invitation_id>",
    summary="Withdraw an invitation",
    scope=company.MANAGE_OWN,
    responses={204: None},
)
def withdraw_invitation(invitation_id: str):
    """Its link stops working. Withdrawing an accepted one leaves the member in place."""
    company.withdraw_invitation(g.actor, invitation_id)
    return _no_content()


@operation(
    "DELETE",
    "/members/<customer_id>",
    summary="Unassign a member from the token's legal entity",
    scope=company.UNASSIGN_OWN,
    responses={204: None},
    errors=(409,),
)
def remove_member(customer_id: str):
    """The member leaves every group of the entity; their access tokens acting for it stop at
    once. The last active ADMIN cannot be removed (409)."""
    company.unassign(g.actor, customer_id)
    return _no_content()


@operation(
    "GET",
    "/groups",
    summary="List the groups of the token's legal entity",
    scope=company.READ_OWN,
    responses={200: SelfServiceGroupList},
)
def list_groups():
    """The entity's own groups with their scopes (tenant-wide groups are the seller's)."""
    items = [rep.group(group, scopes) for group, scopes in company.groups(g.actor)]
    return _json(SelfServiceGroupList(items=items).model_dump())


@operation(
    "PUT",
    "/groups/<group_id>/members/<customer_id>",
    summary="Add a member to a group",
    scope=company.ASSIGN_OWN,
    responses={201: rep.Member, 200: rep.Member},
    errors=(409,),
)
def add_group_member(group_id: str, customer_id: str):
    """Only a group whose scopes the caller holds all of (403 otherwise): no escalation. The
    member's next refresh has the group's scopes. Already a member: 200, nothing changes."""
    member, created = company.add_to_group(g.actor, group_id, customer_id)
    email = db.session.get(Customer, customer_id).email
    return _json(rep.member(member, email), 201 if created else 200)


@operation(
    "DELETE",
    "/groups/<group_id>/members/<customer_id>",
    summary="Remove a member from a group",
    scope=company.UNASSIGN_OWN,
    responses={204: None},
    errors=(409,),
)
def remove_group_member(group_id: str, customer_id: str):
    """The member's access tokens acting for the entity stop at once; the next refresh lacks
    the group's scopes. The last active ADMIN cannot leave ADMIN (409)."""
    company.remove_from_group(g.actor, group_id, customer_id)
    return _no_content()


@operation(
    "GET",
    "/audit-events",
    summary="List the audit events of the token's legal entity",
    scope=company.READ_OWN,
    query=PAGE_PARAMS,
    responses={200: rep.page_of(rep.AuditEvent)},
)
def list_audit_events():
    """Newest first; only events that happened in this entity, and of their details only
    what is about it (never another company's id)."""
    query = company.audit_events_query(g.actor)
    return _json(page(query, [(AuditEvent.id, True)], _audit_event))
