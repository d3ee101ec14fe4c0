"""/admin/legal-entities: companies and their subsidiaries."""

from __future__ import annotations

from typing import Annotated, Literal

from flask import url_for
from pydantic import Field
from sqlalchemy import select

from ...models import LegalEntity
from ...services import legal_entities
from . import representations as rep
from .query import Param, arg, arg_bool, arg_choice, page
from .routing import actor, for_change, found, no_content, operation, record, respond
from .schema import ID_PATTERN, Body, Money, Name, text

TAG = "Legal entities"
TYPES = ("COMPANY", "SUBSIDIARY")

EntityId = text(64)


class AccountLimitChange(Body):
    """Credit limit; null for none."""

    currency: text(3, pattern="^[A-Z]{3}$")
    value: Money


class LegalEntityCreate(Body):
    id: Annotated[text(64, pattern=ID_PATTERN), Field(description="Chosen id (optional).")] = None
    name: Name
    type: Annotated[Literal[TYPES], Field(description="Default COMPANY.")] = None
    parent_id: Annotated[
        EntityId | None, Field(description="Subsidiaries only.", examples=["acme"])
    ] = None
    account_limit: AccountLimitChange | None = None


class LegalEntityUpdate(Body):
    name: Name = None
    parent_id: Annotated[EntityId, Field(description="Move a subsidiary (never a cycle).")] = None
    account_limit: AccountLimitChange | None = None


ENTITY_ID = "<entity_id>"


def _plain_limit(limit: dict | None) -> dict | None:
    return None if limit is None else {"currency": limit["currency"], "value": limit["value"]}


@operation(
    "POST",
    "/legal-entities",
    summary="Create a legal entity",
    tag=TAG,
    body=LegalEntityCreate,
    responses={201: rep.LegalEntity},
    conflicts=True,
)
def create_legal_entity(body: dict):
    """A COMPANY, or a SUBSIDIARY of `parent_id`; it comes with its predefined ADMIN, BUYER,
    REQUESTER and CONTACT groups."""
    entity = legal_entities.create_legal_entity(
        body["name"],
        type=body.get("type", "COMPANY"),
        parent_id=body.get("parent_id"),
        id=body.get("id"),
        account_limit=_plain_limit(body.get("account_limit")),
    )
    record("legal_entity.created", target=entity.id, type=entity.type, parent_id=entity.parent_id)
    location = url_for("admin.get_legal_entity", entity_id=entity.id)
    return respond(rep.legal_entity(entity), 201, entity.version, location)


@operation(
    "GET",
    "/legal-entities",
    summary="List legal entities",
    tag=TAG,
    query=(
        Param("name", {"type": "string", "maxLength": 255}, "Name contains (any case)."),
        Param("type", {"type": "string", "enum": list(TYPES)}),
        Param("parent_id", {"type": "string", "maxLength": 64}, "Subsidiaries of."),
    ),
    paginated=True,
    responses={200: rep.page_of(rep.LegalEntity)},
)
def list_legal_entities():
    """Ordered by name."""
    query = select(LegalEntity)
    name, type_, parent_id = arg("name"), arg_choice("type", TYPES), arg("parent_id", 64)
    if name:
        query = query.where(LegalEntity.name.icontains(name, autoescape=True))
    if type_:
        query = query.where(LegalEntity.type == type_)
    if parent_id is not None:
        query = query.where(LegalEntity.parent_id == parent_id)
    return page(query, [(LegalEntity.name, False), (LegalEntity.id, False)], rep.legal_entity)


@operation(
    "GET",
    f"/legal-entities/{ENTITY_ID}",
    summary="Get a legal entity",
    tag=TAG,
    responses={200: rep.LegalEntity},
    etag=True,
)
def get_legal_entity(entity_id: str):
    entity = found(LegalEntity, entity_id, "legal entity")
    return respond(rep.legal_entity(entity), version=entity.version)


@operation(
    "PATCH",
    f"/legal-entities/{ENTITY_ID}",
    summary="Update a legal entity",
    tag=TAG,
    body=LegalEntityUpdate,
    responses={200: rep.LegalEntity},
    conflicts=True,
    etag=True,
)
def update_legal_entity(entity_id: str, body: dict):
    """Rename, set or clear the account limit, or move a subsidiary to another parent."""
    for_change(LegalEntity, entity_id, "legal entity")
    if "account_limit" in body:
        body["account_limit"] = _plain_limit(body["account_limit"])
    entity = legal_entities.update_legal_entity(entity_id, body)
    record("legal_entity.updated", target=entity_id, changed=sorted(body))
    return respond(rep.legal_entity(entity), version=entity.version)


@operation(
    "DELETE",
    f"/legal-entities/{ENTITY_ID}",
    summary="Delete a legal entity",
    tag=TAG,
    query=(
        Param(
            "cascade",
            {"type": "string", "enum": ["true", "false"], "default": "false"},
            "Also delete subsidiaries and unassign customers.",
        ),
    ),
    responses={204: None},
    conflicts=True,
    etag=True,
)
def delete_legal_entity(entity_id: str):
    """Refused (409) while it has subsidiaries or assigned customers, unless `cascade=true`;
    sessions acting for a deleted entity lose their access tokens at once."""
    cascade = arg_bool("cascade")
    for_change(LegalEntity, entity_id, "legal entity")
    legal_entities.delete_legal_entity(entity_id, cascade=cascade, actor=actor())
    return no_content()
