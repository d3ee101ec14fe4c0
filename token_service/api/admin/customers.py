"""/admin/customers: customers, their assignments, their sessions, their effective scopes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from flask import current_app, url_for
from pydantic import Field
from sqlalchemy import select

from ... import entitlements
from ...extensions import db
from ...models import (
    ASSIGNMENT_TYPES,
    Assignment,
    Client,
    Customer,
    GroupMember,
    GroupScope,
    LegalEntity,
    Scope,
    Session,
    utcnow,
)
from ...scopes import effective_scopes, split_scopes
from ...services import customers, legal_entities, sessions
from . import representations as rep
from .errors import ApiError, not_found
from .query import Param, arg, arg_choice, page
from .routing import actor, for_change, found, no_content, operation, record, respond
from .schema import ID_PATTERN, Body, Email, text

TAG = "Customers"
CUSTOMER_ID = "<customer_id>"
Password = text(1024, min_length=8)
EntityId = text(64)
AssignmentType = Literal[ASSIGNMENT_TYPES]


class CustomerCreate(Body):
    id: Annotated[text(64, pattern=ID_PATTERN), Field(description="Chosen id (optional).")] = None
    email: Email
    password: Annotated[
        Password | None,
        Field(description="Optional: without one the customer cannot log in by password."),
    ] = None
    default_legal_entity_id: Annotated[
        EntityId | None,
        Field(
            description="The customer is assigned to it (CONTACT) and it becomes the default "
            "legal entity."
        ),
    ] = None


class CustomerUpdate(Body):
    email: Email = None
    password: Annotated[
        Password | None, Field(description="null removes the password (no password login).")
    ] = None
    default_legal_entity_id: Annotated[
        EntityId | None, Field(description="One the customer is assigned to.")
    ] = None


class AssignmentCreate(Body):
    legal_entity_id: Annotated[EntityId, Field(examples=["globex"])]
    type: Annotated[AssignmentType, Field(description="Default CONTACT.")] = None


class AssignmentUpdate(Body):
    type: AssignmentType


def _customer(customer_id: str) -> Customer:
    return found(Customer, customer_id, "customer")


# -- customers --------------------------------------------------------------------------------


@operation(
    "POST",
    "/customers",
    summary="Create a customer",
    tag=TAG,
    body=CustomerCreate,
    responses={201: rep.Customer},
    conflicts=True,
)
def create_customer(body: dict):
    """Emails are unique whatever their case (409 if taken)."""
    if "id" in body and db.session.get(Customer, body["id"]) is not None:
        raise ApiError.of(409, "a customer with this id exists", "id")
    default = body.get("default_legal_entity_id")
    if default is not None:
        found(LegalEntity, default, "legal entity", field="default_legal_entity_id")
    customer = customers.create_customer(
        body["email"], body.get("password"), id=body.get("id"), default_legal_entity_id=None
    )
    record("customer.created", customer_id=customer.id, default_legal_entity_id=default)
    if default is not None:
        legal_entities.assign(customer.id, default)
        customer.default_legal_entity_id = default
        record("assignment.created", customer_id=customer.id, target=default, type="CONTACT")
    db.session.flush()
    location = url_for("admin.get_customer", customer_id=customer.id)
    return respond(rep.customer(customer), 201, customer.version, location)


@operation(
    "GET",
    "/customers",
    summary="List customers",
    tag=TAG,
    query=(
        Param("email", {"type": "string", "maxLength": 320}, "Email contains (any case)."),
        Param("legal_entity_id", {"type": "string", "maxLength": 64}, "Assigned to."),
    ),
    paginated=True,
    responses={200: rep.page_of(rep.Customer)},
)
def list_customers():
    """Ordered by email."""
    query = select(Customer)
    email, entity = arg("email", 320), arg("legal_entity_id", 64)
    if email:
        query = query.where(Customer.email.contains(email.lower(), autoescape=True))
    if entity is not None:
        query = query.join(Assignment, Assignment.customer_id == Customer.id).where(
            Assignment.legal_entity_id == entity
        )
    return page(query, [(Customer.email, False)], rep.customer)


@operation(
    "GET",
    f"/customers/{CUSTOMER_ID}",
    summary="Get a customer",
    tag=TAG,
    responses={200: rep.Customer},
    etag=True,
)
def get_customer(customer_id: str):
    customer = _customer(customer_id)
    return respond(rep.customer(customer), version=customer.version)


@operation(
    "PATCH",
    f"/customers/{CUSTOMER_ID}",
    summary="Update a customer",
    tag=TAG,
    body=CustomerUpdate,
    responses={200: rep.Customer},
    conflicts=True,
    etag=True,
)
def update_customer(customer_id: str, body: dict):
    """Change the email, the password, or the default legal entity (one the customer is
    assigned to, else 409). A new or removed password signs the customer out everywhere
    (sessions and browser sessions)."""
    for_change(Customer, customer_id, "customer")
    customer = customers.update_customer(customer_id, body, actor=actor())
    record("customer.updated", customer_id=customer_id, changed=sorted(body))
    return respond(rep.customer(customer), version=customer.version)


@operation(
    "DELETE",
    f"/customers/{CUSTOMER_ID}",
    summary="Delete a customer",
    tag=TAG,
    responses={204: None},
    etag=True,
)
def delete_customer(customer_id: str):
    """Revokes every session first, so their access tokens stop at once."""
    for_change(Customer, customer_id, "customer")
    customer = customers.delete_customer(customer_id, actor=actor())
    record("customer.deleted", customer_id=customer_id, email=customer.email)
    return no_content()


@operation(
    "POST",
    f"/customers/{CUSTOMER_ID}/block",
    summary="Block a customer",
    tag=TAG,
    responses={200: rep.Customer},
    etag=True,
)
def block_customer(customer_id: str):
    """Every session is revoked and its access tokens stop at once; no new login."""
    return _change_status(customer_id, customers.block_customer)


@operation(
    "POST",
    f"/customers/{CUSTOMER_ID}/unblock",
    summary="Unblock a customer",
    tag=TAG,
    responses={200: rep.Customer},
    etag=True,
)
def unblock_customer(customer_id: str):
    """The customer may log in again; revoked sessions stay revoked."""
    return _change_status(customer_id, customers.unblock_customer)


def _change_status(customer_id: str, change: Callable[..., None]):
    """Block or unblock (`change`, from lifecycle) a customer as last read (`If-Match`)."""
    customer = for_change(Customer, customer_id, "customer")
    change(customer_id, actor=actor())
    return respond(rep.customer(customer), version=customer.version)


# -- assignments ------------------------------------------------------------------------------


def _assignment_row(customer_id: str, entity_id: str):
    row = db.session.execute(
        select(Assignment, LegalEntity.name)
        .join(LegalEntity, LegalEntity.id == Assignment.legal_entity_id)
        .where(Assignment.customer_id == customer_id, Assignment.legal_entity_id == entity_id)
    ).first()
    if row is None:
        raise not_found("assignment")
    return rep.assignment(row[0], row[1])


@operation(
    "GET",
    f"/customers/{CUSTOMER_ID}/assignments",
    summary="List a customer's assignments",
    tag=TAG,
    paginated=True,
    responses={200: rep.page_of(rep.Assignment)},
)
def list_assignments(customer_id: str):
    """Ordered by legal entity id."""
    _customer(customer_id)
    query = select(Assignment).where(Assignment.customer_id == customer_id)
    return page(
        query,
        [(Assignment.legal_entity_id, False)],
        lambda row: rep.assignment(row, row.legal_entity.name),
    )


@operation(
    "POST",
    f"/customers/{CUSTOMER_ID}/assignments",
    summary="Assign a customer to a legal entity",
    tag=TAG,
    body=AssignmentCreate,
    responses={201: rep.Assignment},
    conflicts=True,
)
def create_assignment(customer_id: str, body: dict):
    """The customer joins the entity's CONTACT group; 409 if already assigned."""
    _customer(customer_id)
    entity_id, type_ = body["legal_entity_id"], body.get("type", "CONTACT")
    legal_entities.assign(customer_id, entity_id, type_)
    record("assignment.created", customer_id=customer_id, target=entity_id, type=type_)
    location = url_for("admin.get_assignment", customer_id=customer_id, entity_id=entity_id)
    return respond(_assignment_row(customer_id, entity_id), 201, location=location)


@operation(
    "GET",
    f"/customers/{CUSTOMER_ID}/assignments/<entity_id>",
    summary="Get an assignment",
    tag=TAG,
    responses={200: rep.Assignment},
)
def get_assignment(customer_id: str, entity_id: str):
    return respond(_assignment_row(customer_id, entity_id))


@operation(
    "PATCH",
    f"/customers/{CUSTOMER_ID}/assignments/<entity_id>",
    summary="Change an assignment's type",
    tag=TAG,
    body=AssignmentUpdate,
    responses={200: rep.Assignment},
)
def update_assignment(customer_id: str, entity_id: str, body: dict):
    """PRIMARY, BILLING, LOGISTICS or CONTACT; group memberships stay as they are."""
    legal_entities.set_assignment_type(customer_id, entity_id, body["type"])
    record("assignment.updated", customer_id=customer_id, target=entity_id, type=body["type"])
    return respond(_assignment_row(customer_id, entity_id))


@operation(
    "DELETE",
    f"/customers/{CUSTOMER_ID}/assignments/<entity_id>",
    summary="Unassign a customer from a legal entity",
    tag=TAG,
    responses={204: None},
)
def delete_assignment(customer_id: str, entity_id: str):
    """The customer leaves the entity's groups; sessions acting for it lose their access tokens
    at once and continue without an entity at the next refresh."""
    _customer(customer_id)
    legal_entities.remove_assignment(customer_id, entity_id, actor=actor())
    return no_content()


# -- sessions ---------------------------------------------------------------------------------


def _session(customer_id: str, session_id: str) -> Session:
    session = db.session.get(Session, session_id)
    if session is None or session.customer_id != customer_id:
        raise not_found("session")
    return session


@operation(
    "GET",
    f"/customers/{CUSTOMER_ID}/sessions",
    summary="List a customer's sessions",
    tag=TAG,
    query=(
        Param(
            "state",
            {"type": "string", "enum": ["live", "revoked", "all"], "default": "all"},
            "live: neither revoked nor expired.",
        ),
    ),
    paginated=True,
    responses={200: rep.page_of(rep.Session)},
)
def list_sessions(customer_id: str):
    """Newest first."""
    _customer(customer_id)
    state = arg_choice("state", ("live", "revoked", "all")) or "all"
    query = select(Session).where(Session.customer_id == customer_id)
    if state == "revoked":
        query = query.where(Session.revoked_at.is_not(None))
    elif state == "live":
        now = utcnow()
        query = query.where(
            Session.revoked_at.is_(None), Session.expires_at > now, Session.idle_expires_at > now
        )
    return page(query, [(Session.created_at, True), (Session.id, True)], rep.session)


@operation(
    "GET",
    f"/customers/{CUSTOMER_ID}/sessions/<session_id>",
    summary="Get a session",
    tag=TAG,
    responses={200: rep.Session},
)
def get_session(customer_id: str, session_id: str):
    return respond(rep.session(_session(customer_id, session_id)))


@operation(
    "DELETE",
    f"/customers/{CUSTOMER_ID}/sessions/<session_id>",
    summary="Revoke a session",
    tag=TAG,
    responses={200: rep.Session},
)
def revoke_one_session(customer_id: str, session_id: str):
    """Its refresh token stops working and its access tokens stop at once, and the sign-in
    (browser session) it came from ends (idempotent)."""
    session = _session(customer_id, session_id)
    sessions.revoke_one_session(session, "revoked_by_admin", actor=actor())
    return respond(rep.session(session))


@operation(
    "DELETE",
    f"/customers/{CUSTOMER_ID}/sessions",
    summary="Revoke all sessions of a customer",
    tag=TAG,
    responses={200: rep.RevokedSessions},
)
def revoke_all_sessions(customer_id: str):
    """Logs the customer out everywhere (refresh tokens and browser sessions); the customer
    may sign in again."""
    _customer(customer_id)
    revoked = sessions.revoke_all_sessions(customer_id, "revoked_by_admin", actor=actor())
    return respond(rep.RevokedSessions(revoked=revoked).model_dump())


# -- effective scopes -------------------------------------------------------------------------


@operation(
    "GET",
    f"/customers/{CUSTOMER_ID}/effective-scopes",
    summary="Preview a customer's effective scopes",
    tag=TAG,
    query=(
        Param(
            "legal_entity_id",
            {"type": "string", "maxLength": 64},
            "Acting for this entity (must be assigned, else 409); absent: no entity.",
        ),
        Param(
            "client_id",
            {"type": "string", "maxLength": 128},
            "Cap by this client's ceiling; absent: every catalogue scope.",
        ),
    ),
    responses={200: rep.EffectiveScopes},
    conflicts=True,
)
def effective_scopes_preview(customer_id: str):
    """The scopes a refresh would give now, computed by the token endpoint's own function,
    with the groups (or the baseline) that contribute each one."""
    customer = _customer(customer_id)
    entity = arg("legal_entity_id", 64)
    client_id = arg("client_id", 128)
    entities, grants = entitlements.of(customer_id)
    if entity is not None and entity not in {e["id"] for e in entities}:
        raise ApiError.of(
            409, "the customer is not assigned to that legal entity", "legal_entity_id"
        )
    if client_id is None:
        ceiling = frozenset(db.session.scalars(select(Scope.name)))
    else:
        ceiling = split_scopes(found(Client, client_id, "client", field="client_id").scope)
    baseline = split_scopes(current_app.config["SETTINGS"].baseline_scopes)
    scope = effective_scopes(grants, entity, ceiling, baseline)

    # Attribution: the memberships that count for `entity` (effective_scopes' rule), by group.
    counts = GroupMember.legal_entity_id.is_(None)
    if entity is not None:
        counts = counts | (GroupMember.legal_entity_id == entity)
    rows = db.session.execute(
        select(GroupScope.scope, GroupMember.group_id)
        .join(GroupScope, GroupScope.group_id == GroupMember.group_id)
        .where(GroupMember.customer_id == customer_id, counts)
        .order_by(GroupMember.group_id)
    )
    sources: dict[str, list[str]] = {}
    for name, group_id in rows:
        sources.setdefault(name, []).append(group_id)
    scopes = [
        rep.ScopeSource(
            scope=name,
            sources=(["baseline"] if name in baseline else []) + sources.get(name, []),
        )
        for name in scope.split()
    ]
    preview = rep.EffectiveScopes(
        customer_id=customer_id,
        legal_entity_id=entity,
        client_id=client_id,
        customer_status=customer.status,
        scope=scope,
        scopes=scopes,
    )
    return respond(preview.model_dump())
