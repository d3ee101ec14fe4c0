"""What a customer may act for and hold: their assigned legal entities and the scopes of their
groups. One query, written once: the token endpoint's statements embed it (see oauth2/sessions),
and the admin preview, self-service, the hosted login and the Emporix layer run it alone."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import text

from .extensions import db
from .scopes import GroupGrant


class Entitlements(NamedTuple):
    """The entities a customer may act for ([{id, name}] by name) and their group grants."""

    entities: list[dict]
    grants: list[GroupGrant]


def rows_sql(customer: str) -> str:
    """The entitlement rows of the customer that the SQL expression `customer` names (a bind
    parameter, or a column of an enclosing statement): ('e', entity id, entity name) for each
    assignment, ('g', membership's entity, scope) for each scope of each group."""
    return f"""
        SELECT 'e' AS kind, e.id AS a, e.name AS b
        FROM assignments ea JOIN legal_entities e ON e.id = ea.legal_entity_id
        WHERE ea.customer_id = {customer}
        UNION ALL
        SELECT 'g', gm.legal_entity_id, gs.scope
        FROM group_members gm JOIN group_scopes gs ON gs.group_id = gm.group_id
        WHERE gm.customer_id = {customer}
    """  # noqa: S608 - `customer` is a constant of the callers, never input


def by_name(entity: dict) -> tuple[str, str]:
    """Entities in the order of the token response's `legal_entities`."""
    return entity["name"], entity["id"]


def from_rows(rows) -> Entitlements:
    """Entitlements from rows of `rows_sql`, in any order."""
    entities = sorted(({"id": a, "name": b} for kind, a, b in rows if kind == "e"), key=by_name)
    return Entitlements(entities, [GroupGrant(a, b) for kind, a, b in rows if kind == "g"])


_ENTITLEMENTS = text(rows_sql(":customer_id"))


def of(customer_id: str) -> Entitlements:
    """A customer's entitlements, read in the current transaction."""
    return from_rows(db.session.execute(_ENTITLEMENTS, {"customer_id": customer_id}).all())
