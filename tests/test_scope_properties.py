"""Scope resolution (DESIGN §3) against a plain oracle, over random companies, subsidiaries,
groups and memberships: exactly the oracle's answer, never a scope from another entity, never
beyond the ceiling."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from token_service.scopes import GroupGrant, effective_scopes, join_scopes, split_scopes

SCOPES = [f"svc{i}.res_act{j}" for i in range(4) for j in range(4)]
ENTITIES = [f"le{i}" for i in range(6)]


@st.composite
def worlds(draw):
    """Entities in a random forest, groups (entity or tenant-wide) with scopes, one customer's
    memberships, a baseline and a ceiling."""
    parents = {}
    for i, entity in enumerate(ENTITIES):
        parents[entity] = draw(st.sampled_from([None, *ENTITIES[:i]])) if i else None
    groups = draw(
        st.lists(
            st.tuples(
                st.sampled_from([None, *ENTITIES]),
                st.frozensets(st.sampled_from(SCOPES), max_size=6),
            ),
            max_size=10,
        )
    )
    member_of = draw(st.sets(st.integers(0, max(len(groups) - 1, 0)), max_size=len(groups)))
    member_of = {i for i in member_of if i < len(groups)}
    baseline = draw(st.frozensets(st.sampled_from(SCOPES), max_size=4))
    ceiling = draw(st.frozensets(st.sampled_from(SCOPES)))
    return parents, groups, member_of, baseline, ceiling


def oracle(groups, member_of, entity, ceiling, baseline) -> set[str]:
    """DESIGN §3 read literally, one group at a time."""
    held = set(baseline)
    for index, (group_entity, scopes) in enumerate(groups):
        if index not in member_of:
            continue
        if group_entity is None or group_entity == entity:
            held |= scopes
    return {s for s in held if s in ceiling}


def grants_of(groups, member_of) -> list[GroupGrant]:
    return [
        GroupGrant(entity, scope)
        for i, (entity, scopes) in enumerate(groups)
        if i in member_of
        for scope in sorted(scopes)
    ]


@settings(max_examples=400, deadline=None)
@given(worlds(), st.sampled_from([None, *ENTITIES]))
def test_equals_oracle(world, entity):
    _, groups, member_of, baseline, ceiling = world
    result = effective_scopes(grants_of(groups, member_of), entity, ceiling, baseline)
    assert split_scopes(result) == oracle(groups, member_of, entity, ceiling, baseline)
    # Sorted, space-separated, no duplicates.
    assert result == join_scopes(set(result.split()))
    assert result.split() == sorted(set(result.split()))


@settings(max_examples=400, deadline=None)
@given(worlds(), st.sampled_from(ENTITIES))
def test_never_a_scope_only_another_entity_grants(world, entity):
    parents, groups, member_of, baseline, ceiling = world
    result = split_scopes(effective_scopes(grants_of(groups, member_of), entity, ceiling, baseline))
    assert result <= ceiling
    from_here = set(baseline)
    for i, (group_entity, scopes) in enumerate(groups):
        if i in member_of and group_entity in (None, entity):
            from_here |= scopes
    # Whatever a parent's, a subsidiary's or a stranger's group grants stays there.
    assert result <= from_here
    relatives = {parents[entity]} | {e for e, p in parents.items() if p == entity}
    for i, (group_entity, scopes) in enumerate(groups):
        if i in member_of and group_entity in relatives - {None}:
            assert result & scopes <= from_here


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_no_entity_means_tenant_wide_groups_only(world):
    _, groups, member_of, baseline, ceiling = world
    result = split_scopes(effective_scopes(grants_of(groups, member_of), None, ceiling, baseline))
    tenant_wide = set(baseline)
    for i, (group_entity, scopes) in enumerate(groups):
        if i in member_of and group_entity is None:
            tenant_wide |= scopes
    assert result == tenant_wide & ceiling


@settings(max_examples=300, deadline=None)
@given(worlds(), st.sampled_from([None, *ENTITIES]), st.frozensets(st.sampled_from(SCOPES)))
def test_monotonic_in_the_ceiling_and_duplicates_change_nothing(world, entity, extra):
    _, groups, member_of, baseline, ceiling = world
    grants = grants_of(groups, member_of)
    narrow = split_scopes(effective_scopes(grants, entity, ceiling, baseline))
    wide = split_scopes(effective_scopes(grants, entity, ceiling | extra, baseline))
    assert narrow <= wide
    assert effective_scopes(grants * 2, entity, ceiling, baseline) == effective_scopes(
        grants, entity, ceiling, baseline
    )


def test_split_and_join():
    assert split_scopes(None) == frozenset()
    assert split_scopes("") == frozenset()
    assert split_scopes("  a.b   c.d ") == {"a.b", "c.d"}
    assert join_scopes({"b.x", "a.y"}) == "a.y b.x"
    assert join_scopes([]) == ""
