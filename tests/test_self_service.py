"""Company self-service (/self-service, services/company.py): every rule on both backends.

alice@acme.test is in ACME's ADMIN group (and a CONTACT of Globex), bob@acme.test in ACME's
BUYER group (demo data)."""

from __future__ import annotations

import os
import re
import socket
import threading
import uuid
from dataclasses import replace
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from alembic import command
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import IntegrityError

from token_service import create_app
from token_service.config import ConfigError, Settings
from token_service.database import alembic_config, upgrade
from token_service.demo import DEMO_PASSWORD, load_demo
from token_service.extensions import db
from token_service.kv import MemoryStore
from token_service.models import (
    Assignment,
    AuditEvent,
    Client,
    Customer,
    CustomerGroup,
    GroupMember,
    GroupScope,
    Invitation,
    OutboxMessage,
)
from token_service.services import company, customers, groups, legal_entities
from token_service.services.groups import add_member, group_of

ALICE, BOB = "cus_alice", "cus_bob"
PG_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class SelfService:
    """Calls to /self-service with a customer's access token."""

    def __init__(self, client, token: str | None) -> None:
        self.client = client
        self.token = token

    def call(self, method: str, path: str, json=None, headers=None):
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.client.open("/self-service" + path, method=method, json=json, headers=headers)

    def get(self, path):
        return self.call("GET", path)

    def invite(self, email):
        return self.call("POST", "/invitations", {"email": email})

    def add(self, group_id, customer_id):
        return self.call("PUT", f"/groups/{group_id}/members/{customer_id}")

    def remove(self, group_id, customer_id):
        return self.call("DELETE", f"/groups/{group_id}/members/{customer_id}")

    def unassign(self, customer_id):
        return self.call("DELETE", f"/members/{customer_id}")


def accept(client, token, password="a new password"):
    return client.post(
        "/self-service/invitations/accept", json={"token": token, "password": password}
    )


@pytest.fixture
def login(storefront):
    """Log a customer in acting for an entity; returns (SelfService, token response)."""

    def call(email="alice@acme.test", entity="acme", password=DEMO_PASSWORD):
        params = {"legal_entity_id": entity} if entity else {}
        r = storefront.login(username=email, password=password, **params)
        assert r.status_code == 200, r.json
        return SelfService(storefront.client, r.json["access_token"]), r.json

    return call


@pytest.fixture
def alice(login):
    return login()[0]


def group(app, entity: str, code: str) -> str:
    with app.app_context():
        return groups.group_of(entity, code).id


def run(app, fn, *args, **kwargs):
    """Call a service function in its own committed transaction."""
    with app.app_context():
        result = fn(*args, **kwargs)
        db.session.commit()
        return result


def make_customer(app, email, entity=None, groups=(), password=None):
    with app.app_context():
        customer = customers.create_customer(email, password)
        if entity:
            legal_entities.assign(customer.id, entity)
        for code in groups:
            add_member(group_of(entity, code).id, customer.id)
        db.session.commit()
        return customer.id


def custom_group(app, entity, scopes, name="Helpers"):
    with app.app_context():
        group_id = groups.create_group(name, scopes, legal_entity_id=entity).id
        db.session.commit()
        return group_id


def outbox(app) -> list[OutboxMessage]:
    with app.app_context():
        rows = list(db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        db.session.expunge_all()
        return rows


def link_token(body: str) -> str:
    return re.search(r"\?token=([A-Za-z0-9_-]+)", body).group(1)


#: An invitation's answer, whether or not its address has an account.
INVITATION_FIELDS = {"id", "email", "legal_entity_id", "status", "created_at", "expires_at"}


def customer_id(app, email: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Customer.id).where(Customer.email == email))


def set_settings(app, monkeypatch, **changes):
    monkeypatch.setitem(app.config, "SETTINGS", replace(app.config["SETTINGS"], **changes))


# -- who may call -----------------------------------------------------------------------------


def test_no_token_is_401(client):
    r = client.get("/self-service/members")
    assert r.status_code == 401
    assert r.json["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_garbage_token_is_401(client):
    r = SelfService(client, "a.b.c").get("/members")
    assert r.status_code == 401 and r.json["error"] == "invalid_token"


def test_a_token_without_entity_can_do_nothing(app, login):
    make_customer(app, "nora@example.test", password=DEMO_PASSWORD)
    me, tokens = login("nora@example.test", entity=None)
    assert tokens["legal_entity_id"] is None
    for r in (me.get("/members"), me.get("/groups"), me.invite("x@example.test")):
        assert r.status_code == 403, r.json
        assert set(r.json) >= {"error", "message"}


def test_a_client_token_is_refused(app, client):
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("admin-cli", app.secrets["admin-cli"]),
    )
    r = SelfService(client, r.json["access_token"]).get("/members")
    assert r.status_code == 403


def test_a_customer_token_is_still_refused_by_the_admin_api(client, alice):
    r = client.get("/admin/customers", headers={"Authorization": f"Bearer {alice.token}"})
    assert r.status_code == 403


def test_a_buyer_lacks_the_own_scopes(app, login):
    bob, _ = login("bob@acme.test")
    r = bob.get("/members")
    assert r.status_code == 403 and r.json["error"] == "insufficient_scope"
    assert "customer.customer_read_own" in r.headers["WWW-Authenticate"]
    assert bob.invite("x@example.test").status_code == 403
    assert bob.add(group(app, "acme", "ADMIN"), BOB).status_code == 403
    assert bob.unassign(ALICE).status_code == 403


def test_a_token_narrowed_by_scope_holds_only_what_it_asked_for(login, storefront):
    _, tokens = login()
    r = storefront.refresh(tokens["refresh_token"], scope="customer.customer_read_own")
    narrowed = SelfService(storefront.client, r.json["access_token"])
    assert narrowed.get("/members").status_code == 200
    assert narrowed.invite("x@example.test").status_code == 403


# -- reads ------------------------------------------------------------------------------------


def test_members_are_the_entitys_only(app, alice):
    make_customer(app, "gina@globex.test", "globex")
    make_customer(app, "lou@logistics.test", "acme-logistics")
    r = alice.get("/members")
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    by_email = {m["email"]: m for m in r.json["items"]}
    assert set(by_email) == {"alice@acme.test", "bob@acme.test"}
    alice_row = by_email["alice@acme.test"]
    assert alice_row["assignment_type"] == "PRIMARY"
    assert alice_row["status"] == "active"
    assert set(alice_row["groups"]) == {group(app, "acme", "ADMIN"), group(app, "acme", "CONTACT")}
    assert set(r.json["items"][0]) == {"id", "email", "name", "status", "assignment_type", "groups"}


def test_groups_are_the_entitys_own(app, alice):
    tenant_wide = custom_group(app, None, ["order.order_create"], "Everyone")
    r = alice.get("/groups")
    assert r.status_code == 200
    ids = {g["id"] for g in r.json["items"]}
    assert ids == {group(app, "acme", code) for code in ("ADMIN", "BUYER", "REQUESTER", "CONTACT")}
    assert tenant_wide not in ids
    buyer = next(g for g in r.json["items"] if g["code"] == "BUYER")
    assert "order.order_create" in buyer["scopes"]


# -- invitations ------------------------------------------------------------------------------


def test_invite_a_new_email_then_accept(app, client, alice, login, storefront):
    r = alice.invite("Carol@ACME.test")
    assert r.status_code == 201, r.json
    assert r.json["status"] == "pending" and r.json["email"] == "carol@acme.test"
    assert set(r.json) == INVITATION_FIELDS  # no customer: none until accepted
    carol_id = customer_id(app, "carol@acme.test")
    contact = group(app, "acme", "CONTACT")
    with app.app_context():
        carol = db.session.get(Customer, carol_id)
        assert carol.status == "invited" and carol.password_hash is None
        # Nothing is assigned before she accepts.
        assert db.session.get(Assignment, (carol_id, "acme")) is None
        invitation = db.session.get(Invitation, r.json["id"])
    [message] = outbox(app)
    assert message.recipient == "carol@acme.test" and message.kind == "invitation"
    token = link_token(message.body)
    # Only the token's hash is stored.
    assert invitation.token_hash != token and token not in invitation.token_hash
    # Invited: no login yet, with any password.
    assert storefront.login("carol@acme.test", "a new password").status_code == 400
    listed = {m["email"] for m in alice.get("/members").json["items"]}
    assert "carol@acme.test" not in listed

    assert accept(client, token, "short").status_code == 422
    r = accept(client, token)
    assert r.status_code == 200, r.json
    assert r.json == {"id": carol_id, "email": "carol@acme.test", "status": "active"}
    with app.app_context():
        assert db.session.get(Assignment, (carol_id, "acme")).type == "CONTACT"
        assert db.session.get(GroupMember, (contact, carol_id)) is not None
    listed = {m["email"]: m for m in alice.get("/members").json["items"]}
    assert listed["carol@acme.test"]["status"] == "active"
    # Single use.
    r = accept(client, token, "another password")
    assert r.status_code == 404 and set(r.json) >= {"error", "message"}
    _, tokens = login("carol@acme.test", password="a new password")
    assert tokens["legal_entity_id"] == "acme"
    assert "order.order_create" not in tokens["scope"]


def test_an_expired_activation_token_is_404(app, client, alice):
    r = alice.invite("carol@acme.test")
    token = link_token(outbox(app)[0].body)
    with app.app_context():
        invitation = db.session.get(Invitation, r.json["id"])
        invitation.expires_at = invitation.created_at - timedelta(seconds=1)
        db.session.commit()
    assert accept(client, token).status_code == 404
    # Inviting again renews the link: a new token, the old one still dead.
    r = alice.invite("carol@acme.test")
    assert r.status_code == 201 and r.json["status"] == "pending"
    new_token = link_token(outbox(app)[-1].body)
    assert new_token != token
    assert accept(client, token).status_code == 404
    assert accept(client, new_token).status_code == 200


def test_unknown_and_malformed_activation_tokens(client):
    assert accept(client, "no-such-token").status_code == 404
    assert client.post("/self-service/invitations/accept", json={"token": 1}).status_code == 422
    r = client.post("/self-service/invitations/accept", data="x", content_type="text/plain")
    assert r.status_code == 400


def test_a_withdrawn_invitation_cannot_be_accepted(app, client, alice, login):
    invitation = alice.invite("carol@acme.test").json["id"]
    token = link_token(outbox(app)[0].body)
    # Another company cannot withdraw it; its own admin can.
    make_customer(app, "gina@globex.test", "globex", ["ADMIN"], password=DEMO_PASSWORD)
    gina, _ = login("gina@globex.test", entity="globex")
    assert gina.call("DELETE", f"/invitations/{invitation}").status_code == 404
    assert alice.call("DELETE", f"/invitations/{invitation}").status_code == 204
    assert alice.call("DELETE", f"/invitations/{invitation}").status_code == 404
    assert accept(client, token).status_code == 404
    assert alice.get("/invitations").json["items"] == []
    # A member's invitation withdrawn: the member stays.
    alice.invite("bob@acme.test")
    [listed] = alice.get("/invitations").json["items"]
    assert alice.call("DELETE", f"/invitations/{listed['id']}").status_code == 204
    assert "bob@acme.test" in {m["email"] for m in alice.get("/members").json["items"]}


def test_invitations_are_idempotent_per_entity_and_email(app, alice):
    first = alice.invite("carol@acme.test")
    again = alice.invite("CAROL@acme.test")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json == first.json
    assert len(outbox(app)) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Invitation)) == 1


def _all_at_once(app, token: str, email: str, threads: int) -> list:
    """`threads` identical invitations sent at the same moment; their (status, body)."""
    barrier = threading.Barrier(threads)
    answers = []

    def send() -> None:
        me = SelfService(app.test_client(), token)
        barrier.wait()
        r = me.invite(email)
        answers.append((r.status_code, r.json))

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return answers


@pytest.mark.parametrize("existing", [False, True], ids=["new-email", "existing-customer"])
def test_concurrent_identical_invitations_answer_as_a_repeat_does(
    app, alice, monkeypatch, existing
):
    """Two identical invitations at once: one 201, the others exactly what a sequential repeat
    answers (200, the same body), never a 409 from the unique constraint they race for."""
    set_settings(app, monkeypatch, invitation_rate_limit=1000)
    for round_ in range(6):
        email = f"race{round_}@globex.test"
        if existing:
            make_customer(app, email, "globex", password=DEMO_PASSWORD)
        answers = _all_at_once(app, alice.token, email, threads=3)
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200, 200, 201], answers
        repeat = alice.invite(email)
        assert repeat.status_code == 200
        assert all(body == repeat.json for _, body in answers), answers
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Invitation)) == 6
    assert len(outbox(app)) == 6


def test_invite_an_existing_customer_assigns_nothing_until_they_join(app, alice, storefront):
    """The security review's case (issue 25, defect 3): the answer is a new address's, and
    the customer is nobody's member until they join on the hosted page (test_invitation_join)."""
    gina = make_customer(app, "gina@globex.test", "globex", password=DEMO_PASSWORD)
    r = alice.invite("gina@globex.test")
    assert r.status_code == 201 and r.json["status"] == "pending"
    assert set(r.json) == INVITATION_FIELDS and gina not in str(r.json)
    with app.app_context():
        assert db.session.get(Assignment, (gina, "acme")) is None
        assert db.session.get(Customer, gina).status == "active"
    [message] = outbox(app)
    assert message.kind == "invitation_join" and "/invitations/join?token=" in message.body
    assert "gina@globex.test" not in {m["email"] for m in alice.get("/members").json["items"]}
    r = storefront.login("gina@globex.test", DEMO_PASSWORD, legal_entity_id="acme")
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
    r = storefront.login("gina@globex.test", DEMO_PASSWORD)
    assert [e["id"] for e in r.json["legal_entities"]] == ["globex"]
    assert alice.invite("gina@globex.test").status_code == 200
    r = alice.invite("bob@acme.test")  # a member already: nothing moves, nothing is sent
    assert r.status_code == 200 and r.json["status"] == "accepted"
    assert set(r.json) == INVITATION_FIELDS
    assert len(outbox(app)) == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Assignment)) == 4


def test_invalid_emails_are_422(alice):
    for body in ({"email": "no-at-sign"}, {"email": ""}, {}, {"email": "a@b", "x": 1}):
        r = alice.call("POST", "/invitations", body)
        assert r.status_code == 422, (body, r.json)


def test_invitations_are_rate_limited_per_inviter(app, alice, monkeypatch):
    set_settings(app, monkeypatch, invitation_rate_limit=2)
    assert alice.invite("c1@acme.test").status_code == 201
    assert alice.invite("c2@acme.test").status_code == 201
    r = alice.invite("c3@acme.test")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    with app.app_context():
        assert (
            db.session.scalar(select(Customer.id).where(Customer.email == "c3@acme.test")) is None
        )


# -- group membership and its effect ----------------------------------------------------------


def test_the_story_invite_activate_add_to_buyer_refresh(app, client, alice, login, storefront):
    alice.invite("carol@acme.test")
    r = accept(client, link_token(outbox(app)[0].body))
    assert r.status_code == 200
    carol_id = r.json["id"]
    _, carol = login("carol@acme.test", password="a new password")
    assert "order.order_create" not in carol["scope"]
    buyer = group(app, "acme", "BUYER")
    r = alice.add(buyer, carol_id)
    assert r.status_code == 201 and r.json["customer_id"] == carol_id
    assert alice.add(buyer, carol_id).status_code == 200  # again: nothing changes
    r = storefront.refresh(carol["refresh_token"])
    assert "order.order_create" in r.json["scope"].split()


def test_removal_denies_live_tokens_and_the_next_refresh_lacks_the_scope(
    app, alice, login, introspect, storefront
):
    bob, tokens = login("bob@acme.test")
    assert introspect(bob.token)["active"] is True
    r = alice.remove(group(app, "acme", "BUYER"), BOB)
    assert r.status_code == 204
    assert introspect(bob.token) == {"active": False}
    r = storefront.refresh(tokens["refresh_token"])
    assert r.status_code == 200 and "order.order_create" not in r.json["scope"].split()
    assert alice.remove(group(app, "acme", "BUYER"), BOB).status_code == 404


def test_unassign_removes_every_group_and_denies_tokens(app, alice, login, introspect, storefront):
    bob, tokens = login("bob@acme.test")
    assert alice.unassign(BOB).status_code == 204
    assert introspect(bob.token) == {"active": False}
    with app.app_context():
        assert db.session.get(Assignment, (BOB, "acme")) is None
        assert not db.session.scalars(
            select(GroupMember).where(GroupMember.customer_id == BOB)
        ).all()
    r = storefront.refresh(tokens["refresh_token"])
    assert r.json["legal_entity_id"] is None
    assert alice.unassign(BOB).status_code == 404


# -- confinement ------------------------------------------------------------------------------


def test_nothing_outside_the_entity(app, alice):
    gina = make_customer(app, "gina@globex.test", "globex", ["ADMIN"])
    lou = make_customer(app, "lou@logistics.test", "acme-logistics", ["BUYER"])
    tenant_wide = custom_group(app, None, ["customermanagement.legalentity_read_own"], "All")
    for entity, code in (("globex", "BUYER"), ("acme-logistics", "BUYER")):
        assert alice.add(group(app, entity, code), ALICE).status_code == 404
        assert alice.add(group(app, entity, code), BOB).status_code == 404
    assert alice.add(tenant_wide, BOB).status_code == 404
    assert alice.add(tenant_wide, ALICE).status_code == 404
    assert alice.remove(group(app, "globex", "ADMIN"), gina).status_code == 404
    assert alice.remove(group(app, "acme-logistics", "BUYER"), lou).status_code == 404
    assert alice.remove(group(app, "globex", "CONTACT"), ALICE).status_code == 404
    # Customers who are not ACME's members, in ACME's own groups or as unassign targets.
    assert alice.add(group(app, "acme", "BUYER"), gina).status_code == 404
    assert alice.add(group(app, "acme", "BUYER"), lou).status_code == 404
    assert alice.unassign(gina).status_code == 404
    assert alice.unassign(lou).status_code == 404
    assert alice.unassign("cus_nobody").status_code == 404
    assert alice.add("grp_nothing", BOB).status_code == 404
    with app.app_context():
        assert db.session.get(Assignment, (gina, "globex")) is not None
        assert db.session.get(Assignment, (lou, "acme-logistics")) is not None
        assert db.session.get(Assignment, (gina, "acme")) is None


def test_acting_for_another_entity_gives_that_entitys_rights_only(app, login):
    # alice is a plain CONTACT of Globex: her Globex token manages nothing.
    me, _ = login(entity="globex")
    assert me.get("/members").status_code == 403
    assert me.add(group(app, "globex", "ADMIN"), ALICE).status_code == 403
    assert me.add(group(app, "acme", "ADMIN"), BOB).status_code == 403


def test_admins_of_one_company_cannot_touch_the_neighbour(app, alice, login):
    make_customer(app, "gina@globex.test", "globex", ["ADMIN"], password=DEMO_PASSWORD)
    gina, _ = login("gina@globex.test", entity="globex")
    assert gina.unassign(ALICE).status_code == 204  # alice is a Globex CONTACT: Globex's to remove
    with app.app_context():
        assert db.session.get(Assignment, (ALICE, "acme")) is not None
    assert gina.unassign(BOB).status_code == 404
    assert gina.add(group(app, "acme", "BUYER"), BOB).status_code == 404
    assert gina.remove(group(app, "acme", "ADMIN"), ALICE).status_code == 404


# -- no escalation ----------------------------------------------------------------------------


def test_no_group_beyond_the_actors_own_scopes(app, login):
    helpers = custom_group(
        app,
        "acme",
        [
            "customermanagement.legalentity_read_own",
            "customer.customer_read_own",
            "iam.assignment_create_own",
            "iam.assignment_delete_own",
        ],
    )
    run(app, groups.add_member, helpers, BOB)
    bob, _ = login("bob@acme.test")
    r = bob.add(group(app, "acme", "ADMIN"), BOB)
    assert r.status_code == 403 and "approval.approval_manage" in r.json["message"]
    assert bob.add(group(app, "acme", "ADMIN"), ALICE).status_code in (200, 403)
    assert bob.remove(group(app, "acme", "ADMIN"), ALICE).status_code == 403
    assert bob.unassign(ALICE).status_code == 403  # alice's ADMIN is beyond bob's scopes
    # Within bob's own scopes (he is a BUYER): allowed.
    carol = make_customer(app, "carol@acme.test", "acme")
    assert bob.add(group(app, "acme", "BUYER"), carol).status_code == 201
    assert bob.add(helpers, carol).status_code == 201
    with app.app_context():
        admin = groups.group_of("acme", "ADMIN").id
        assert db.session.get(GroupMember, (admin, BOB)) is None


def test_no_way_to_change_group_scopes_or_the_catalogue(app, client, alice):
    buyer = group(app, "acme", "BUYER")
    headers = {"Authorization": f"Bearer {alice.token}"}
    for method, path in (
        ("PATCH", f"/self-service/groups/{buyer}"),
        ("PUT", f"/self-service/groups/{buyer}"),
        ("POST", "/self-service/groups"),
        ("PUT", f"/self-service/groups/{buyer}/scopes"),
        ("POST", "/admin/scopes"),
        ("PATCH", f"/admin/groups/{buyer}"),
    ):
        r = client.open(path, method=method, json={"scopes": ["admin.manage"]}, headers=headers)
        assert r.status_code in (403, 404, 405), (method, path, r.status_code)


# -- the last admin ---------------------------------------------------------------------------


def test_the_last_admin_cannot_leave(app, alice, login):
    admin = group(app, "acme", "ADMIN")
    r = alice.remove(admin, ALICE)
    assert r.status_code == 409 and r.json["error"] == "conflict"
    assert alice.unassign(ALICE).status_code == 409
    # A second admin who is blocked does not count.
    dora = make_customer(app, "dora@acme.test", "acme", ["ADMIN"], password=DEMO_PASSWORD)
    run(app, customers.block_customer, dora, actor=("system", None))
    assert alice.remove(admin, ALICE).status_code == 409
    run(app, customers.unblock_customer, dora, actor=("system", None))
    # With another active admin, alice may go, and then dora is the last.
    dora_api, _ = login("dora@acme.test")
    assert alice.remove(admin, ALICE).status_code == 204
    assert dora_api.remove(admin, "cus_dora_missing").status_code == 404
    assert dora_api.unassign(dora).status_code == 409
    with app.app_context():
        assert db.session.get(GroupMember, (admin, dora)) is not None


# -- blocked actors and revoked sessions ------------------------------------------------------


def test_a_blocked_actor_is_refused_at_once(app, alice):
    assert alice.get("/members").status_code == 200
    run(app, customers.block_customer, ALICE, actor=("client", "admin-cli"))
    r = alice.get("/members")
    assert r.status_code == 401 and r.json["error"] == "invalid_token"
    assert alice.invite("x@example.test").status_code == 401


def test_a_revoked_session_is_refused_at_once(login, client):
    me, tokens = login()
    r = client.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": "storefront"}
    )
    assert r.status_code == 200
    assert me.get("/members").status_code == 401
    assert me.unassign(BOB).status_code == 401


def test_an_actor_removed_from_admin_loses_rights_at_once(app, alice, login):
    dora = make_customer(app, "dora@acme.test", "acme", ["ADMIN"], password=DEMO_PASSWORD)
    dora_api, _ = login("dora@acme.test")
    assert alice.remove(group(app, "acme", "ADMIN"), dora).status_code == 204
    assert dora_api.remove(group(app, "acme", "ADMIN"), ALICE).status_code == 401


# -- audit ------------------------------------------------------------------------------------


def test_audit_events_name_the_customer_and_the_entity(app, client, alice, login):
    gina = make_customer(app, "gina@globex.test", "globex", ["ADMIN"], password=DEMO_PASSWORD)
    gina_api, _ = login("gina@globex.test", entity="globex")
    assert gina_api.unassign(ALICE).status_code == 204  # Globex's event
    alice.invite("carol@acme.test")
    carol = accept(client, link_token(outbox(app)[0].body)).json["id"]
    assert alice.add(group(app, "acme", "BUYER"), carol).status_code == 201
    assert alice.remove(group(app, "acme", "BUYER"), carol).status_code == 204
    assert alice.unassign(carol).status_code == 204
    r = alice.get("/audit-events")
    assert r.status_code == 200
    events = r.json["items"]
    actions = [e["action"] for e in events]
    assert actions == [
        "assignment.removed",
        "group.member_removed",
        "group.member_added",
        "invitation.accepted",  # carol's own: she joined by activating
        "assignment.created",
        "invitation.created",  # no customer: a new address and an account look alike
        "login.succeeded",  # alice's own login for ACME: a company sees its members' logins
    ]
    actors = [(e["actor_type"], e["actor_id"]) for e in events]
    assert set(actors[:3] + actors[5:]) == {("customer", ALICE)}
    assert set(actors[3:5]) == {("customer", carol)}
    assert all(e["customer_id"] == carol for e in events[:5])
    assert events[5]["customer_id"] is None
    with app.app_context():
        entities = {
            (action, entity)
            for action, entity in db.session.execute(
                select(AuditEvent.action, AuditEvent.legal_entity_id).where(
                    AuditEvent.actor_id == ALICE, AuditEvent.action.not_like("login.%")
                )
            )
        }
        # The new customer's record is the seller's: in ACME's feed it would tell that the
        # address had no account.
        assert {entity for action, entity in entities if action != "customer.invited"} == {"acme"}
        assert ("customer.invited", None) in entities
        globex = db.session.scalars(
            select(AuditEvent).where(
                AuditEvent.actor_id == gina, AuditEvent.action.not_like("login.%")
            )
        ).all()
        assert [(e.action, e.legal_entity_id) for e in globex] == [("assignment.removed", "globex")]
    r = alice.get("/audit-events?limit=2")
    assert len(r.json["items"]) == 2 and r.json["next_cursor"]
    bob, _ = login("bob@acme.test")
    assert bob.get("/audit-events").status_code == 403


def test_accepting_is_audited_in_the_entity(app, client, alice):
    alice.invite("carol@acme.test")
    carol = accept(client, link_token(outbox(app)[0].body)).json["id"]
    events = alice.get("/audit-events").json["items"]
    assert events[0]["action"] == "invitation.accepted"
    assert (events[0]["actor_type"], events[0]["actor_id"]) == ("customer", carol)


# -- delivery ---------------------------------------------------------------------------------


class Inbox:
    """An aiosmtpd handler that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list = []
        self.received = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        self.received.set()
        return "250 OK"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    with socket.socket() as probe:  # a free port (aiosmtpd's own start-up check needs one)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_the_invitation_goes_out_by_smtp(app, client, alice, login, smtp_server, monkeypatch):
    inbox, port = smtp_server
    set_settings(app, monkeypatch, smtp_url=f"smtp://127.0.0.1:{port}", mail_from="shop@acme.test")
    assert alice.invite("carol@acme.test").status_code == 201
    assert inbox.received.wait(10)
    [envelope] = inbox.messages
    assert envelope.rcpt_tos == ["carol@acme.test"]
    assert envelope.mail_from == "shop@acme.test"
    mail = message_from_bytes(envelope.content, policy=policy.default)
    assert "ACME Corp" in mail["Subject"]
    token = link_token(mail.get_content())
    [row] = outbox(app)
    assert row.sent_at is not None and row.attempts == 1
    assert row.body == ""  # the link is not kept once delivered
    assert accept(client, token).status_code == 200
    login("carol@acme.test", password="a new password")


def test_an_smtp_failure_leaves_the_message_pending(app, alice, monkeypatch):
    set_settings(app, monkeypatch, smtp_url="smtp://127.0.0.1:9")  # nothing listens there
    assert alice.invite("carol@acme.test").status_code == 201
    [row] = outbox(app)
    assert row.sent_at is None and row.attempts == 1 and row.last_error
    assert "token=" in row.body


def test_console_mode_prints_the_link(app, alice, monkeypatch, capfd):
    set_settings(app, monkeypatch, smtp_url="console")
    assert alice.invite("carol@acme.test").status_code == 201
    printed = capfd.readouterr().err
    assert "carol@acme.test" in printed and "?token=" in printed
    assert outbox(app)[0].sent_at is not None


# -- the migration ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_at_0001(request, tmp_path):
    """A database of its own at revision 0001, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.sqlite3'}"
        return
    name = f"ts_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migration_0003_keeps_the_data_and_grants_the_invite_scope(database_at_0001, keys_dir):
    settings = replace(
        Settings.from_env({}),
        database_url=database_at_0001,
        redis_url=None,
        issuer="http://issuer.test",
        keys_dir=keys_dir,
    )
    app = create_app({"SETTINGS": settings, "STORE": MemoryStore(), "TESTING": True})
    with app.app_context():
        # A deployment made just before 0003: the demo data (written through today's models),
        # then the schema taken back to 0002 and the scope taken out, in SQL.
        upgrade(db.engine)
        load_demo()
        db.session.commit()
        db.session.remove()
        with db.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
        db.session.execute(text(f"DELETE FROM scopes WHERE name = '{company.MANAGE_OWN}'"))
        ceiling = db.session.scalar(
            text("SELECT scope FROM clients WHERE client_id = 'storefront'")
        )
        db.session.execute(
            text("UPDATE clients SET scope = :scope WHERE client_id = 'storefront'"),
            {"scope": " ".join(sorted(set(ceiling.split()) - {company.MANAGE_OWN}))},
        )
        db.session.commit()
        counts = {
            table: db.session.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("customers", "assignments", "group_members", "group_scopes")
        }
        db.session.remove()
        upgrade(db.engine)
        assert counts["group_members"] > 0  # the old schema kept the demo's memberships
        after = {
            table: db.session.scalar(text(f"SELECT count(*) FROM {table}")) for table in counts
        }
        admins = db.session.scalar(
            select(func.count())
            .select_from(GroupScope)
            .join(CustomerGroup, CustomerGroup.id == GroupScope.group_id)
            .where(CustomerGroup.code == "ADMIN", GroupScope.scope == company.MANAGE_OWN)
        )
        assert admins == 3  # ACME, ACME Logistics, Globex
        assert after == {**counts, "group_scopes": counts["group_scopes"] + 3}
        assert company.MANAGE_OWN in db.session.get(Client, "storefront").scope.split()
        customer = customers.create_customer("new@example.test", None)
        customer.status = "invited"
        db.session.commit()
        bad = customers.create_customer("bad@example.test", None)
        bad.status = "unknown"
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.engine.dispose()


def test_notifications_send_retries_what_failed(app, alice, smtp_server, monkeypatch):
    set_settings(app, monkeypatch, smtp_url="smtp://127.0.0.1:9")
    assert alice.invite("carol@acme.test").status_code == 201
    assert outbox(app)[0].sent_at is None
    inbox, port = smtp_server
    set_settings(app, monkeypatch, smtp_url=f"smtp://127.0.0.1:{port}")
    result = app.test_cli_runner().invoke(args=["notifications", "send"])
    assert result.exit_code == 0, result.output
    assert "1 message(s) sent" in result.output
    assert inbox.received.wait(10)
    assert outbox(app)[0].sent_at is not None


@pytest.mark.parametrize("url", ["http://mail.test", "smtp://", "mail.test:25"])
def test_a_bad_smtp_url_stops_the_service(url):
    with pytest.raises(ConfigError, match="TOKEN_SERVICE_SMTP_URL"):
        Settings.from_env({"TOKEN_SERVICE_SMTP_URL": url})
