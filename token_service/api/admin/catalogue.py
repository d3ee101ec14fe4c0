"""/admin/scopes: the scope catalogue, every scope a group or a client may hold."""

from __future__ import annotations

from typing import Annotated

from flask import url_for
from pydantic import Field
from sqlalchemy import select

from ...models import Scope
from ...services import catalogue
from . import representations as rep
from .query import Param, arg_choice, page
from .routing import found, operation, record, respond
from .schema import SCOPE_PATTERN, TEXT_PATTERN, Body, text

TAG = "Scope catalogue"


class ScopeCreate(Body):
    name: Annotated[
        text(128, pattern=SCOPE_PATTERN),
        Field(description="`service.resource_action`, e.g. `order.order_read_le`."),
    ]
    description: Annotated[
        text(1000, pattern=TEXT_PATTERN),
        Field(
            description="What the scope lets a client do, in a person's words (the consent "
            'page shows it), e.g. "See all orders of your company". Required.'
        ),
    ]


class ScopeDescription(Body):
    description: Annotated[
        text(1000, pattern=TEXT_PATTERN),
        Field(description="The scope's new description, in a person's words."),
    ]


@operation(
    "GET",
    "/scopes",
    summary="List the scope catalogue",
    tag=TAG,
    query=(
        Param(
            "predefined",
            {"type": "string", "enum": ["true", "false"]},
            "Only predefined (true) or custom (false) scopes.",
        ),
    ),
    paginated=True,
    responses={200: rep.page_of(rep.Scope)},
)
def list_scopes():
    """Ordered by name."""
    query = select(Scope)
    predefined = arg_choice("predefined", ("true", "false"))
    if predefined is not None:
        query = query.where(Scope.predefined.is_(predefined == "true"))
    return page(query, [(Scope.name, False)], rep.scope)


@operation(
    "POST",
    "/scopes",
    summary="Add a custom scope",
    tag=TAG,
    body=ScopeCreate,
    responses={201: rep.Scope},
    conflicts=True,
)
def create_scope(body: dict):
    """A description is required (422 without one): the consent page shows it to customers.
    409 if the name is taken."""
    scope = catalogue.add_scope(body["name"], body["description"])
    record("scope.created", target=scope.name)
    return respond(rep.scope(scope), 201, location=url_for("admin.get_scope", name=scope.name))


@operation(
    "GET",
    "/scopes/<name>",
    summary="Get a scope",
    tag=TAG,
    responses={200: rep.Scope},
)
def get_scope(name: str):
    return respond(rep.scope(found(Scope, name, "scope")))


@operation(
    "PATCH",
    "/scopes/<name>",
    summary="Describe a scope",
    tag=TAG,
    body=ScopeDescription,
    responses={200: rep.Scope},
)
def describe_scope(name: str, body: dict):
    """Set the words the consent page shows for a scope, predefined ones included (`migrate`
    never overwrites a description)."""
    scope = catalogue.describe_catalogue_scope(name, body["description"])
    record("scope.updated", target=scope.name)
    return respond(rep.scope(scope))
