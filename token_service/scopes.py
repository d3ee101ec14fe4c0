"""Effective scopes: the one pure function that decides what a token may do (DESIGN section 3).

effective(customer, E, ceiling) = ceiling ∩ (baseline ∪ scopes of every group the customer is a
member of whose legal entity is E or tenant-wide). Plain data in, a sorted string out: no
database, no app, so it can be tested exhaustively against an oracle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

#: Reading the customer's own legal entities (the CONTACT bundle's scope): what another client
#: than a first-party one must have been consented to learn the customer's companies (the token
#: response's `legal_entities`, the Emporix layer's `me`).
COMPANIES_SCOPE = "customermanagement.legalentity_read_own"


class GroupGrant(NamedTuple):
    """One scope held through one group: the group's legal entity (None = tenant-wide)."""

    legal_entity_id: str | None
    scope: str


def split_scopes(value: str | None) -> frozenset[str]:
    """Parse an RFC 6749 §3.3 scope string (space-delimited) into a set."""
    return frozenset(value.split()) if value else frozenset()


def join_scopes(scopes: Iterable[str]) -> str:
    """Sorted, space-separated: the form every token and response carries."""
    return " ".join(sorted(scopes))


def effective_scopes(
    grants: Iterable[GroupGrant],
    legal_entity_id: str | None,
    ceiling: frozenset[str],
    baseline: frozenset[str],
) -> str:
    """Scopes a customer acting for `legal_entity_id` holds, capped by the session's ceiling.

    A grant counts only when its group belongs to exactly that entity or to no entity: a group
    of a parent or a subsidiary never leaks into another entity.
    """
    held = set(baseline)
    for grant in grants:
        if grant.legal_entity_id is None or grant.legal_entity_id == legal_entity_id:
            held.add(grant.scope)
    return join_scopes(held & ceiling)
