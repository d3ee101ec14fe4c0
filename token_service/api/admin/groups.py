"""/admin/groups: customer groups, their scopes and their members."""

from __future__ import annotations

from typing import Annotated

from flask import url_for
from pydantic import Field
from sqlalchemy import select

from ...extensions import db
from ...models import GROUP_CODES, Customer, CustomerGroup, GroupMember, GroupScope
from ...revocation import fence_issuance
from ...services import groups
from . import representations as rep
from .errors import ApiError
from .query import Param, arg, arg_choice, page
from .routing import actor, for_change, found, no_content, operation, record, respond
from .schema import SCOPE_PATTERN, Body, Name, text

TAG = "Groups"
GROUP_ID = "<group_id>"
ScopeName = text(128, pattern=SCOPE_PATTERN)
Scopes = Annotated[list[ScopeName], Field(max_length=200)]


class GroupCreate(Body):
    name: Name
    legal_entity_id: Annotated[
        text(64) | None,
        Field(description="Absent or null: a tenant-wide group.", examples=["acme"]),
    ] = None
    scopes: Annotated[
        Scopes,
        Field(description="Scopes of the catalogue.", examples=[["order.order_read_le"]]),
    ] = None


class GroupUpdate(Body):
    name: Name = None
    scopes: Annotated[
        Scopes,
        Field(
            description="Replaces the scopes; members' live access tokens where the group "
            "counts stop at once, and their next refresh has the new scopes."
        ),
    ] = None


class MemberCreate(Body):
    customer_id: text(64)


def _group(group_id: str) -> CustomerGroup:
    return found(CustomerGroup, group_id, "group")


def _scopes_of(group_id: str) -> list[str]:
    return list(db.session.scalars(select(GroupScope.scope).where(GroupScope.group_id == group_id)))


def _render(group: CustomerGroup) -> dict:
    return rep.group(group, _scopes_of(group.id))


@operation(
    "POST",
    "/groups",
    summary="Create a custom group",
    tag=TAG,
    body=GroupCreate,
    responses={201: rep.Group},
    conflicts=True,
)
def create_group(body: dict):
    """In a legal entity, or tenant-wide (counts in every entity) without `legal_entity_id`."""
    scopes = body.get("scopes", [])
    group = groups.create_group(body["name"], scopes, legal_entity_id=body.get("legal_entity_id"))
    record(
        "group.created",
        target=group.id,
        legal_entity_id=group.legal_entity_id,
        scopes=sorted(set(scopes)),
    )
    location = url_for("admin.get_group", group_id=group.id)
    return respond(_render(group), 201, group.version, location)


@operation(
    "GET",
    "/groups",
    summary="List groups",
    tag=TAG,
    query=(
        Param("legal_entity_id", {"type": "string", "maxLength": 64}),
        Param("code", {"type": "string", "enum": list(GROUP_CODES)}),
        Param(
            "tenant_wide",
            {"type": "string", "enum": ["true", "false"]},
            "true: only tenant-wide groups; false: only groups of an entity.",
        ),
    ),
    paginated=True,
    responses={200: rep.page_of(rep.Group)},
)
def list_groups():
    """Ordered by id."""
    query = select(CustomerGroup)
    entity, code = arg("legal_entity_id", 64), arg_choice("code", GROUP_CODES)
    tenant_wide = arg_choice("tenant_wide", ("true", "false"))
    if entity is not None:
        query = query.where(CustomerGroup.legal_entity_id == entity)
    if code is not None:
        query = query.where(CustomerGroup.code == code)
    if tenant_wide == "true":
        query = query.where(CustomerGroup.legal_entity_id.is_(None))
    elif tenant_wide == "false":
        query = query.where(CustomerGroup.legal_entity_id.is_not(None))
    return page(query, [(CustomerGroup.id, False)], _render)


@operation(
    "GET",
    f"/groups/{GROUP_ID}",
    summary="Get a group",
    tag=TAG,
    responses={200: rep.Group},
    etag=True,
)
def get_group(group_id: str):
    group = _group(group_id)
    return respond(_render(group), version=group.version)


@operation(
    "PATCH",
    f"/groups/{GROUP_ID}",
    summary="Rename a group or replace its scopes",
    tag=TAG,
    body=GroupUpdate,
    responses={200: rep.Group},
    etag=True,
)
def update_group(group_id: str, body: dict):
    """Predefined groups too: their scopes started from the templates, and may be tuned."""
    group = for_change(CustomerGroup, group_id, "group")
    if "scopes" in body:
        groups.set_group_scopes_now(group_id, body["scopes"], actor=actor())
    if "name" in body:
        group.name = body["name"]
        record("group.renamed", target=group_id, name=body["name"])
        if "scopes" not in body:  # set_group_scopes_now bumps the version itself
            group.version += 1
    db.session.flush()
    return respond(_render(group), version=group.version)


@operation(
    "DELETE",
    f"/groups/{GROUP_ID}",
    summary="Delete a custom group",
    tag=TAG,
    responses={204: None},
    conflicts=True,
    etag=True,
)
def delete_group(group_id: str):
    """Predefined groups cannot be deleted (409). Members are removed first, so their live
    access tokens where the group counted stop at once."""
    group = for_change(CustomerGroup, group_id, "group")
    if group.predefined:
        raise ApiError.of(409, "predefined groups cannot be deleted")
    members = list(
        db.session.scalars(select(GroupMember.customer_id).where(GroupMember.group_id == group_id))
    )
    fence_issuance(members)  # every member at once, in id order: see revocation.fence_issuance
    for customer_id in members:
        groups.remove_membership(group_id, customer_id, actor=actor())
    groups.delete_group(group_id)
    record("group.deleted", target=group_id, name=group.name, legal_entity_id=group.legal_entity_id)
    return no_content()


# -- members ----------------------------------------------------------------------------------


@operation(
    "GET",
    f"/groups/{GROUP_ID}/members",
    summary="List a group's members",
    tag=TAG,
    paginated=True,
    responses={200: rep.page_of(rep.Member)},
)
def list_members(group_id: str):
    """Ordered by customer id."""
    _group(group_id)
    query = select(GroupMember).where(GroupMember.group_id == group_id)
    emails = {}

    def render(row: GroupMember) -> dict:
        if row.customer_id not in emails:
            emails[row.customer_id] = db.session.scalar(
                select(Customer.email).where(Customer.id == row.customer_id)
            )
        return rep.member(row, emails[row.customer_id])

    return page(query, [(GroupMember.customer_id, False)], render)


@operation(
    "POST",
    f"/groups/{GROUP_ID}/members",
    summary="Add a customer to a group",
    tag=TAG,
    body=MemberCreate,
    responses={201: rep.Member},
    conflicts=True,
)
def add_member(group_id: str, body: dict):
    """An entity's group takes only customers assigned to that entity (409 otherwise); the
    next refresh acting there has the group's scopes."""
    _group(group_id)
    customer = found(Customer, body["customer_id"], "customer", field="customer_id")
    member = groups.add_member(group_id, customer.id)
    record("group.member_added", customer_id=customer.id, target=group_id)
    return respond(rep.member(member, customer.email), 201)


@operation(
    "DELETE",
    f"/groups/{GROUP_ID}/members/<customer_id>",
    summary="Remove a customer from a group",
    tag=TAG,
    responses={204: None},
)
def remove_member(group_id: str, customer_id: str):
    """The customer's live access tokens where the group counts stop at once."""
    _group(group_id)
    groups.remove_membership(group_id, customer_id, actor=actor())
    return no_content()
