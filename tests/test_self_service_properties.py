"""Company self-service against a plain-Python model: random companies, subsidiaries, custom and
tenant-wide groups, memberships, and sequences of self-service calls by random actors.

After every call, nothing outside the actor's token entity changed (memberships, assignments,
customers, group scopes, the catalogue), the call succeeded exactly when the model says the
rules allow it, and nobody holds a scope in any entity beyond what some member held there when
the seller's admin set it up. Each example builds its world in one transaction on the shared
app and rolls it back, so an example costs only its own statements; both backends run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select

from token_service import company, directory
from token_service.directory import DirectoryError
from token_service.extensions import db
from token_service.models import (
    Assignment,
    Customer,
    CustomerGroup,
    GroupMember,
    GroupScope,
    LegalEntity,
    Scope,
    new_id,
)
from token_service.scopes import split_scopes

EXAMPLES = {"embedded": 200, "postgres": 60}
ENTITIES = ("A", "A1", "B")  # a company, its subsidiary, a neighbour
PARENT = {"A1": "A"}
ROLES = ("ADMIN", "BUYER", "REQUESTER", "CONTACT")
POOL = (
    "customermanagement.legalentity_read_own",
    "customer.customer_read_own",
    "customer.customer_manage_own",
    "iam.assignment_create_own",
    "iam.assignment_delete_own",
    "order.order_create",
    "order.order_read_le",
    "approval.approval_manage",
)
OWNER = -1  # a custom group's entity index meaning "tenant-wide"

custom_groups = st.lists(
    st.tuples(st.sampled_from((0, 1, 2, OWNER)), st.frozensets(st.sampled_from(POOL), max_size=5)),
    max_size=3,
)
customers = st.lists(
    # per customer: {entity index: set of group picks (role names or custom indexes)}
    st.dictionaries(
        st.sampled_from((0, 1, 2)),
        st.frozensets(st.sampled_from((*ROLES, 0, 1, 2)), max_size=3),
        max_size=3,
    ),
    min_size=2,
    max_size=5,
)
steps = st.lists(
    st.tuples(
        st.sampled_from(("add", "remove", "unassign", "invite")),
        st.integers(0, 4),  # actor
        st.integers(0, 2),  # the actor's token entity, among their assignments
        st.integers(0, 5),  # target customer (5: a new email, for invitations)
        st.integers(0, 30),  # group
        st.integers(0, 3),  # 0: target and group anywhere in the world; else: in the entity
    ),
    min_size=3,
    max_size=12,
)


@dataclass
class World:
    entities: list[str]
    customers: list[str]
    groups: list[str] = field(default_factory=list)


def entities() -> list[str]:
    """The legal entities every example shares (with their predefined groups), made once."""
    ids = [f"prop-{name}" for name in ENTITIES]
    if db.session.get(LegalEntity, ids[0]) is None:
        for name, entity_id in zip(ENTITIES, ids, strict=True):
            parent = PARENT.get(name)
            directory.create_legal_entity(
                name,
                id=entity_id,
                type="SUBSIDIARY" if parent else "COMPANY",
                parent_id=f"prop-{parent}" if parent else None,
            )
        db.session.commit()
    return ids


def build(ids: list[str], prefix: str, groups_spec, customers_spec) -> World:
    """The seller admin's setup, written in bulk (a few statements per example)."""
    predefined = {
        (entity, code): group_id
        for group_id, entity, code in db.session.execute(
            select(CustomerGroup.id, CustomerGroup.legal_entity_id, CustomerGroup.code).where(
                CustomerGroup.legal_entity_id.in_(ids), CustomerGroup.predefined.is_(True)
            )
        )
    }
    custom = []  # (id, entity)
    for index, (owner, scopes) in enumerate(groups_spec):
        entity = None if owner == OWNER else ids[owner]
        custom.append((f"{prefix}-g{index}", entity, scopes))
    world = World(ids, [f"{prefix}-c{i}" for i in range(len(customers_spec))])
    assignments, members = [], []
    for customer_id, memberships in zip(world.customers, customers_spec, strict=True):
        for entity_index, picks in sorted(memberships.items()):
            entity = ids[entity_index]
            assignments.append({"customer_id": customer_id, "legal_entity_id": entity})
            chosen = {predefined[(entity, "CONTACT")]}  # as every assignment does
            for pick in picks:
                if isinstance(pick, str):
                    chosen.add(predefined[(entity, pick)])
                elif pick < len(custom) and custom[pick][1] in (entity, None):
                    chosen.add(custom[pick][0])
            members += [
                {"group_id": g, "customer_id": customer_id, "legal_entity_id": e}
                for g, e in ((g, _entity_of(g, custom, entity)) for g in sorted(chosen))
            ]
    if custom:
        db.session.execute(
            insert(CustomerGroup),
            [
                {"id": g, "name": "Custom", "legal_entity_id": e, "code": "CUSTOM"}
                for g, e, _ in custom
            ],
        )
        rows = [{"group_id": g, "scope": s} for g, _, scopes in custom for s in sorted(scopes)]
        if rows:
            db.session.execute(insert(GroupScope), rows)
    db.session.execute(
        insert(Customer),
        [{"id": c, "email": f"{c}@prop.test", "status": "active"} for c in world.customers],
    )
    # Tenant-wide memberships need no assignment: dedupe them across entities.
    members = list({(m["group_id"], m["customer_id"]): m for m in members}.values())
    if assignments:
        db.session.execute(insert(Assignment), assignments)
    if members:
        db.session.execute(insert(GroupMember), members)
    world.groups = sorted([*predefined.values(), *(g for g, _, _ in custom)])
    return world


def _entity_of(group_id: str, custom, entity: str) -> str | None:
    for g, e, _ in custom:
        if g == group_id:
            return e
    return entity


# -- the model: plain data read back, plain Python rules ----------------------------------------


@dataclass(frozen=True)
class State:
    assignments: frozenset  # (customer, entity)
    members: frozenset  # (group, customer, entity of the group)
    customers: frozenset  # (id, email, status, password_hash)
    group_scopes: frozenset  # (group, scope)
    group_entity: dict
    group_code: dict
    catalogue: frozenset

    def scopes_of(self, group: str) -> frozenset[str]:
        return frozenset(s for g, s in self.group_scopes if g == group)

    def effective(self, customer: str, entity: str, baseline) -> frozenset[str]:
        held = set(baseline)
        for group, member, group_entity in self.members:
            if member == customer and group_entity in (entity, None):
                held |= self.scopes_of(group)
        return frozenset(held)

    def assigned(self, customer: str, entity: str) -> bool:
        return (customer, entity) in self.assignments


def read_state(world: World) -> State:
    groups = db.session.execute(
        select(CustomerGroup.id, CustomerGroup.legal_entity_id, CustomerGroup.code)
    ).all()
    return State(
        assignments=frozenset(
            db.session.execute(select(Assignment.customer_id, Assignment.legal_entity_id)).all()
        ),
        members=frozenset(
            db.session.execute(
                select(GroupMember.group_id, GroupMember.customer_id, GroupMember.legal_entity_id)
            ).all()
        ),
        customers=frozenset(
            db.session.execute(
                select(Customer.id, Customer.email, Customer.status, Customer.password_hash)
            ).all()
        ),
        group_scopes=frozenset(
            db.session.execute(select(GroupScope.group_id, GroupScope.scope)).all()
        ),
        group_entity={g: e for g, e, _ in groups},
        group_code={g: c for g, _, c in groups},
        catalogue=frozenset(db.session.scalars(select(Scope.name))),
    )


def outside(state: State, entity: str) -> tuple:
    """Everything a call acting for `entity` must leave alone (customers: see `check`)."""
    return (
        {(c, e) for c, e in state.assignments if e != entity},
        {m for m in state.members if m[2] != entity},
        state.group_scopes,
        state.catalogue,
    )


def last_admin(state: State, entity: str, customer: str) -> bool:
    admins = [
        c
        for g, c, e in state.members
        if e == entity and state.group_code[g] == "ADMIN" and g in _predefined_admins(state)
    ]
    return customer in admins and len(admins) == 1


def _predefined_admins(state: State) -> set[str]:
    # Custom groups are all code CUSTOM here, so code ADMIN means the predefined group.
    return {g for g, code in state.group_code.items() if code == "ADMIN"}


def expected(kind: str, state: State, actor: str, entity: str, target, group, held) -> bool:
    """Whether the rules allow the call (the model of company.py's rules)."""
    if kind == "invite":
        return company.MANAGE_OWN in held
    if not state.assigned(target, entity):
        return False
    if kind == "unassign":
        mine = [g for g, c, e in state.members if c == target and e == entity]
        return (
            company.UNASSIGN_OWN in held
            and all(state.scopes_of(g) <= held for g in mine)
            and not last_admin(state, entity, target)
        )
    if state.group_entity.get(group) != entity or not state.scopes_of(group) <= held:
        return False
    if kind == "add":
        return company.ASSIGN_OWN in held
    return (
        company.UNASSIGN_OWN in held
        and (group, target, entity) in state.members
        and not (state.group_code[group] == "ADMIN" and last_admin(state, entity, target))
    )


def call(kind: str, actor: company.Actor, target, group, email: str):
    if kind == "invite":
        return company.invite(actor, email)
    if kind == "unassign":
        return company.unassign(actor, target)
    if kind == "add":
        return company.add_to_group(actor, group, target)
    return company.remove_from_group(actor, group, target)


def test_self_service_never_reaches_outside_the_entity_nor_escalates(base_app):
    baseline = split_scopes(base_app.config["SETTINGS"].baseline_scopes)
    with base_app.app_context():
        ids = entities()
    seen: Counter = Counter()

    @settings(
        max_examples=EXAMPLES[base_app.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(groups_spec=custom_groups, customers_spec=customers, calls=steps)
    def check(groups_spec, customers_spec, calls):
        with base_app.app_context():
            try:
                prefix = new_id("p").replace("_", "")
                # The seller made the first customer an admin of the company, as one would.
                first = customers_spec[0]
                first = {**first, 0: first.get(0, frozenset()) | {"ADMIN"}}
                world = build(ids, prefix, groups_spec, [first, *customers_spec[1:]])
                initial = read_state(world)
                granted = {
                    e: frozenset().union(
                        baseline,
                        *(
                            initial.effective(c, e, baseline)
                            for c in world.customers
                            if initial.assigned(c, e)
                        ),
                    )
                    for e in world.entities
                }
                state = initial
                for kind, actor_i, entity_i, target_i, group_i, local in calls:
                    actor_id = world.customers[actor_i % len(world.customers)]
                    mine = sorted(e for c, e in state.assignments if c == actor_id)
                    mine = [e for e in mine if e in world.entities]
                    if not mine:
                        continue
                    entity = mine[entity_i % len(mine)]
                    # The strongest token the actor can hold: a refresh just now, no ceiling.
                    held = state.effective(actor_id, entity, baseline)
                    actor = company.Actor(actor_id, entity, held, state.catalogue)
                    # Mostly the entity's own members and groups (the rules' interesting
                    # cases), sometimes anyone and anything (the confinement's).
                    targets = world.customers
                    groups = world.groups
                    if local:
                        targets = [c for c in targets if state.assigned(c, entity)]
                        groups = [g for g in groups if state.group_entity[g] == entity]
                    target = (
                        targets[target_i % len(targets)] if target_i < 5 else f"cus_new{prefix}"
                    )
                    email = f"{target}@prop.test" if target_i < 5 else f"new@{prefix}.test"
                    group = groups[group_i % len(groups)]
                    allowed = expected(kind, state, actor_id, entity, target, group, held)
                    try:
                        call(kind, actor, target, group, email)
                        done = True
                    except DirectoryError as error:
                        assert error.status in (403, 404, 409, 422), error
                        done = False
                    assert done == allowed, (kind, actor_id, entity, target, group)
                    seen[kind, done] += 1
                    after = read_state(world)
                    assert outside(after, entity) == outside(state, entity), (kind, entity)
                    # No customer changes; an invitation may only add one, assigned to E.
                    assert state.customers <= after.customers
                    for new in after.customers - state.customers:
                        assert kind == "invite" and after.assigned(new[0], entity)
                    state = after
                final = state
                for customer, entity in final.assignments:
                    if entity in granted:
                        got = final.effective(customer, entity, baseline)
                        assert got <= granted[entity], (customer, entity)
            finally:
                db.session.rollback()

    check()
    print(dict(seen))
    # Not vacuous: every kind of call both succeeded and was refused along the way.
    assert all(
        seen[kind, done]
        for kind in ("add", "remove", "unassign", "invite")
        for done in (True, False)
    ), seen
