"""Company self-service against a plain-Python model: random companies, subsidiaries, custom and
tenant-wide groups, memberships, and sequences of self-service calls by random actors.

After every call, nothing outside the actor's token entity changed (memberships, assignments,
customers, group scopes, the catalogue), the call succeeded exactly when the model says the
rules allow it, and nobody holds a scope in any entity beyond what some member held there when
the seller's admin set it up. Both backends run.

Thousands of examples, so each is cheap: its world is written in a few bulk inserts and the
state after each call is read in one statement. Most examples call the service functions with
the Actor the views would make, in one transaction rolled back at the end. Some send every call
as a request to the /self-service views with a real access token (a session of the actor's and
a JWT signed with the service's key): those commit their world (the views commit, and on
PostgreSQL the token check reads committed rows on its own connection) and afterwards delete
what the example created, and only that. The entities and the client are shared, made once.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, literal_column, null, or_, select, union_all

from token_service.clients import forget_client
from token_service.extensions import db
from token_service.models import (
    Assignment,
    AuditEvent,
    Customer,
    CustomerGroup,
    GroupMember,
    GroupScope,
    LegalEntity,
    OutboxMessage,
    Scope,
    Session,
    new_id,
    utcnow,
)
from token_service.scopes import join_scopes, split_scopes
from token_service.security import new_token
from token_service.services import clients, company, legal_entities
from token_service.services.base import ServiceError

#: At least 2,000 across the suite (issue 13), within about a minute on two workers.
EXAMPLES = {"embedded": 1300, "postgres": 700}
#: One example in this many sends its calls as requests to the views with real tokens (the
#: views' token checks and commits); the others call the service functions directly, at a
#: fraction of the cost.
HTTP_ONE_IN = 8
CLIENT = "prop-storefront"
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
    max_size=8,
)


@dataclass
class World:
    entities: list[str]
    customers: list[str]
    groups: list[str] = field(default_factory=list)


def entities() -> list[str]:
    """The legal entities every example shares (with their predefined groups) and the client
    their tokens are issued to, made once."""
    ids = [f"prop-{name}" for name in ENTITIES]
    if db.session.get(LegalEntity, ids[0]) is None:
        for name, entity_id in zip(ENTITIES, ids, strict=True):
            parent = PARENT.get(name)
            legal_entities.create_legal_entity(
                name,
                id=entity_id,
                type="SUBSIDIARY" if parent else "COMPANY",
                parent_id=f"prop-{parent}" if parent else None,
            )
        clients.create_client(
            CLIENT,
            confidential=False,
            grant_types=["password", "refresh_token"],
            scope=company.READ_OWN,
            first_party=True,
        )
        forget_client(CLIENT)
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


def undo(world: World, prefix: str) -> None:
    """Delete what the example created (and only that), and commit."""
    addresses = [f"{c}@prop.test" for c in world.customers] + [f"new@{prefix}.test"]
    # An invitation lowercases the address: what it created bears the lowercased one.
    emails = sorted({*addresses, *(address.lower() for address in addresses)})
    ids = list(
        db.session.scalars(
            select(Customer.id).where(
                or_(Customer.id.in_(world.customers), Customer.email.in_(emails))
            )
        )
    )
    db.session.execute(
        delete(AuditEvent).where(or_(AuditEvent.actor_id.in_(ids), AuditEvent.customer_id.in_(ids)))
    )
    db.session.execute(delete(OutboxMessage).where(OutboxMessage.recipient.in_(emails)))
    # Assignments, memberships, sessions and invitations go with their customer.
    db.session.execute(delete(Customer).where(Customer.id.in_(ids)))
    db.session.execute(delete(CustomerGroup).where(CustomerGroup.id.like(f"{prefix}-g%")))
    db.session.commit()


class Tokens:
    """Real access tokens of the actors: a session of their own in the entity, and a JWT signed
    with the service's key as the token endpoint signs it, carrying the strongest scope the
    actor could get there now (a refresh just now, with the whole catalogue as ceiling)."""

    def __init__(self, app, catalogue: frozenset[str]) -> None:
        self.app = app
        self.ceiling = join_scopes(catalogue)
        self.sessions: dict[tuple[str, str], str] = {}

    def of(self, customer_id: str, entity: str, scopes: frozenset[str]) -> str:
        sid = self.sessions.get((customer_id, entity)) or self._session(customer_id, entity)
        settings = self.app.config["SETTINGS"]
        now = int(time.time())
        claims = {
            "iss": settings.issuer,
            "sub": customer_id,
            "aud": settings.audience,
            "exp": now + settings.access_token_ttl,
            "iat": now,
            "jti": new_token(16),
            "client_id": CLIENT,
            "scope": join_scopes(scopes),
            "sid": sid,
            "auth_time": now,
            "legal_entity_id": entity,
        }
        return self.app.extensions["keyring"].current.encode_jwt(claims)

    def _session(self, customer_id: str, entity: str) -> str:
        sid = new_id("sid")
        now = utcnow()
        db.session.add(
            Session(
                id=sid,
                customer_id=customer_id,
                client_id=CLIENT,
                scope=self.ceiling,
                legal_entity_id=entity,
                auth_time=now,
                idle_expires_at=now + timedelta(hours=1),
                expires_at=now + timedelta(hours=1),
            )
        )
        db.session.commit()  # the token check reads it, on PostgreSQL on its own connection
        self.sessions[customer_id, entity] = sid
        return sid

    def forget(self, customer_id: str) -> None:
        """A change to the customer deny-listed their sessions: the next call gets a new one."""
        for key in [k for k in self.sessions if k[0] == customer_id]:
            del self.sessions[key]


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


#: What the state is read from: each table's rows, tagged, in one statement (a round trip per
#: call instead of six). Customers first: their four text columns type the union's columns.
STATE_COLUMNS = (
    ("customers", Customer.id, Customer.email, Customer.status, Customer.password_hash),
    ("assignments", Assignment.customer_id, Assignment.legal_entity_id),
    ("members", GroupMember.group_id, GroupMember.customer_id, GroupMember.legal_entity_id),
    ("group_scopes", GroupScope.group_id, GroupScope.scope),
    ("groups", CustomerGroup.id, CustomerGroup.legal_entity_id, CustomerGroup.code),
    ("catalogue", Scope.name),
)
STATE_QUERY = union_all(
    *(
        select(literal_column(f"'{tag}'"), *columns, *[null()] * (4 - len(columns)))
        for tag, *columns in STATE_COLUMNS
    )
)


def read_state(world: World) -> State:
    rows: dict[str, list[tuple]] = {tag: [] for tag, *_ in STATE_COLUMNS}
    widths = {tag: len(columns) for tag, *columns in STATE_COLUMNS}
    for tag, *values in db.session.execute(STATE_QUERY):
        rows[tag].append(tuple(values[: widths[tag]]))
    return State(
        assignments=frozenset(rows["assignments"]),
        members=frozenset(rows["members"]),
        customers=frozenset(rows["customers"]),
        group_scopes=frozenset(rows["group_scopes"]),
        group_entity={g: e for g, e, _ in rows["groups"]},
        group_code={g: c for g, _, c in rows["groups"]},
        catalogue=frozenset(name for (name,) in rows["catalogue"]),
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


def request(client, token: str, kind: str, target, group, email: str) -> int:
    """The self-service request for one step; returns its status."""
    headers = {"Authorization": f"Bearer {token}"}
    if kind == "invite":
        r = client.post("/self-service/invitations", json={"email": email}, headers=headers)
    elif kind == "unassign":
        r = client.delete(f"/self-service/members/{target}", headers=headers)
    else:
        method = client.put if kind == "add" else client.delete
        r = method(f"/self-service/groups/{group}/members/{target}", headers=headers)
    return r.status_code


def service_call(actor: company.Actor, kind: str, target, group, email: str) -> int:
    """The service function the step's view calls, with the actor the view would make; returns
    the status the view would answer."""
    try:
        if kind == "invite":
            company.invite(actor, email)
        elif kind == "unassign":
            company.unassign(actor, target)
        elif kind == "add":
            company.add_to_group(actor, group, target)
        else:
            company.remove_from_group(actor, group, target)
    except ServiceError as error:
        return error.status
    return 200


def test_self_service_never_reaches_outside_the_entity_nor_escalates(base_app):
    baseline = split_scopes(base_app.config["SETTINGS"].baseline_scopes)
    client = base_app.test_client()
    with base_app.app_context():
        ids = entities()
    seen: Counter = Counter()

    @settings(
        max_examples=EXAMPLES[base_app.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        groups_spec=custom_groups,
        customers_spec=customers,
        calls=steps,
        over_http=st.sampled_from((False,) * (HTTP_ONE_IN - 1) + (True,)),
    )
    def check(groups_spec, customers_spec, calls, over_http):
        seen["examples"] += 1
        seen["over_http"] += over_http
        # The requests share this app context, and so its database session.
        with base_app.app_context():
            prefix = new_id("p").replace("_", "")
            # The seller made the first customer an admin of the company, as one would.
            first = customers_spec[0]
            first = {**first, 0: first.get(0, frozenset()) | {"ADMIN"}}
            world = build(ids, prefix, groups_spec, [first, *customers_spec[1:]])
            if over_http:
                db.session.commit()  # the views commit; the token check reads committed rows
            try:
                run_steps(world, prefix, calls, over_http)
            finally:
                db.session.rollback()
                if over_http:
                    undo(world, prefix)

    def run_steps(world: World, prefix: str, calls, over_http: bool) -> None:
        initial = read_state(world)
        tokens = Tokens(base_app, initial.catalogue)
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
            # Mostly the entity's own members and groups (the rules' interesting cases),
            # sometimes anyone and anything (the confinement's).
            targets = world.customers
            groups = world.groups
            if local:
                targets = [c for c in targets if state.assigned(c, entity)]
                groups = [g for g in groups if state.group_entity[g] == entity]
            target = targets[target_i % len(targets)] if target_i < 5 else f"cus_new{prefix}"
            email = f"{target}@prop.test" if target_i < 5 else f"new@{prefix}.test"
            group = groups[group_i % len(groups)]
            allowed = expected(kind, state, actor_id, entity, target, group, held)
            if over_http:
                token = tokens.of(actor_id, entity, held)
                status = request(client, token, kind, target, group, email)
            else:
                actor = company.Actor(actor_id, entity, held, state.catalogue)
                status = service_call(actor, kind, target, group, email)
            done = status in (200, 201, 204)
            assert done or status in (403, 404, 409), status
            assert done == allowed, (kind, actor_id, entity, target, group, status)
            seen[kind, done] += 1
            if done and kind in ("remove", "unassign"):
                tokens.forget(target)
            after = read_state(world)
            assert outside(after, entity) == outside(state, entity), (kind, entity)
            # No customer changes; an invitation may only add one, assigned nowhere until
            # they accept.
            assert state.customers <= after.customers
            for new in after.customers - state.customers:
                assert kind == "invite" and all(c != new[0] for c, _ in after.assignments)
            state = after
        for customer, entity in state.assignments:
            if entity in granted:
                got = state.effective(customer, entity, baseline)
                assert got <= granted[entity], (customer, entity)

    check()
    print(base_app.backend, dict(seen))
    assert seen["examples"] >= EXAMPLES[base_app.backend] and seen["over_http"], seen
    # Not vacuous: every kind of call both succeeded and was refused along the way.
    assert all(
        seen[kind, done]
        for kind in ("add", "remove", "unassign", "invite")
        for done in (True, False)
    ), seen
