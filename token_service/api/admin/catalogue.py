"""/admin/scopes: the scope catalogue, every scope a group or a client may hold."""

from __future__ import annotations

from flask import url_for
from sqlalchemy import select

from ... import audit, directory
from ...extensions import db
from ...models import Scope
from . import representations as rep
from .errors import not_found
from .query import Param, arg_choice, page
from .routing import actor, operation, respond
from .schema import SCOPE_PATTERN, Obj, Prop, Str, validated

TAG = "Scope catalogue"
CREATE = Obj(
    {
        "name": Prop(
            Str(
                max_length=128,
                pattern=SCOPE_PATTERN,
                description="`service.resource_action`, e.g. `order.order_read_le`.",
            ),
            required=True,
        ),
        "description": Prop(Str(max_length=1000)),
    }
)


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
    responses={200: "ScopePage"},
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
    body=CREATE,
    body_name="ScopeCreate",
    responses={201: "Scope"},
    conflicts=True,
)
def create_scope():
    """409 if the name is taken."""
    body = validated(CREATE)
    scope = directory.add_scope(body["name"], body.get("description", ""))
    kind, who = actor()
    audit.record("scope.created", actor_type=kind, actor_id=who, target=scope.name)
    return respond(rep.scope(scope), 201, location=url_for("admin.get_scope", name=scope.name))


@operation(
    "GET",
    "/scopes/<name>",
    summary="Get a scope",
    tag=TAG,
    responses={200: "Scope"},
)
def get_scope(name: str):
    scope = db.session.get(Scope, name)
    if scope is None:
        raise not_found("scope")
    return respond(rep.scope(scope))
