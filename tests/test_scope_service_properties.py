"""The token endpoint gives exactly the oracle's scopes for random company trees, groups and
memberships, at login and at every switch, on both backends."""

from __future__ import annotations

import itertools

from conftest import Storefront
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scope_properties import oracle

from token_service.extensions import db
from token_service.models import Client
from token_service.scopes import split_scopes
from token_service.services import catalogue, customers, legal_entities
from token_service.services.groups import add_member, create_group

CATALOGUE = [f"shop{i}.item_act{j}" for i in range(3) for j in range(3)]
PASSWORD = "property-test-password"
_ids = itertools.count()


@st.composite
def worlds(draw):
    n = draw(st.integers(2, 4))
    parents = [None] + [draw(st.sampled_from([None, *range(i)])) for i in range(1, n)]
    assigned = draw(st.sets(st.integers(0, n - 1), min_size=1))
    groups = draw(
        st.lists(
            st.tuples(
                st.sampled_from([None, *range(n)]),
                st.frozensets(st.sampled_from(CATALOGUE), min_size=1, max_size=4),
                st.booleans(),  # member?
            ),
            max_size=5,
        )
    )
    return parents, assigned, groups


def build(app, world):
    """Materialise a world through the directory; returns ids and the oracle's inputs."""
    parents, assigned, groups = world
    run = next(_ids)
    with app.app_context():
        catalogue.ensure_scopes(CATALOGUE)
        storefront = db.session.get(Client, "storefront")
        storefront.scope = " ".join(sorted(split_scopes(storefront.scope) | set(CATALOGUE)))
        entities = []
        for i, parent in enumerate(parents):
            entity = legal_entities.create_legal_entity(
                f"Company {run}-{i}",
                id=f"p{run}-{i}",
                type="COMPANY" if parent is None else "SUBSIDIARY",
                parent_id=None if parent is None else entities[parent],
            )
            entities.append(entity.id)
        email = f"prop{run}@example.test"
        customer = customers.create_customer(email, PASSWORD)
        for i in sorted(assigned):
            legal_entities.assign(customer.id, entities[i])
        model, member_of = [], set()
        # Predefined CONTACT groups of assigned entities hold their template scopes.
        contact = split_scopes(app.config["SETTINGS"].group_templates["CONTACT"])
        for i in sorted(assigned):
            member_of.add(len(model))
            model.append((entities[i], contact))
        for entity_index, scopes, member in groups:
            entity_id = None if entity_index is None else entities[entity_index]
            group = create_group("g", scopes, legal_entity_id=entity_id)
            if member and (entity_index is None or entity_index in assigned):
                add_member(group.id, customer.id)
                member_of.add(len(model))
            model.append((entity_id, scopes))
        ceiling = split_scopes(storefront.scope)
        db.session.commit()
        from token_service.clients import forget_client

        forget_client("storefront")
    baseline = split_scopes(app.config["SETTINGS"].baseline_scopes)
    return email, entities, model, member_of, ceiling, baseline


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_every_switch_gives_the_oracles_scopes(app, world):
    email, entities, model, member_of, ceiling, baseline = build(app, world)
    _, assigned, _ = world
    storefront = Storefront(app.test_client())
    first = entities[min(assigned)]
    r = storefront.login(email, PASSWORD, legal_entity_id=first)
    assert r.status_code == 200, r.json
    assert split_scopes(r.json["scope"]) == oracle(model, member_of, first, ceiling, baseline)
    token = r.json["refresh_token"]
    order = [entities[i] for i in sorted(assigned)]
    for entity in order + order[::-1]:
        r = storefront.refresh(token, legal_entity_id=entity)
        assert r.status_code == 200, r.json
        assert r.json["legal_entity_id"] == entity
        assert split_scopes(r.json["scope"]) == oracle(model, member_of, entity, ceiling, baseline)
        token = r.json["refresh_token"]
    for i, entity in enumerate(entities):
        if i not in assigned:
            refused = storefront.refresh(token, legal_entity_id=entity)
            assert refused.json["error"] == "invalid_grant"
    assert storefront.refresh(token).status_code == 200
