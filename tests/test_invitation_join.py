"""An invitation of an existing customer (security review, issue 25, defect 3), on both backends.

alice (ADMIN of ACME, demo data) invites gina, a customer of Globex. Before this fix the answer
said `accepted` with gina's id while a new address said `pending`, gina was assigned to ACME at
once, and ACME's audit feed showed her switches with the id of her other company. Now the
company sees the same for an account and a new address until the invitee accepts, and gina
joins (or declines) on a signed-in page of the hosted login that her email links to."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from alembic import command
from frontdoor import Form, text
from sqlalchemy import select
from sqlalchemy import text as sql
from test_self_service import (  # noqa: F401 (database_at_0001 is a fixture)
    INVITATION_FIELDS,
    SelfService,
    accept,
    customer_id,
    database_at_0001,
    make_customer,
    set_settings,
)

from token_service import create_app
from token_service.config import Settings
from token_service.database import alembic_config, upgrade
from token_service.demo import DEMO_PASSWORD, load_demo
from token_service.extensions import db
from token_service.kv import MemoryStore
from token_service.models import (
    Assignment,
    AuditEvent,
    GroupMember,
    Invitation,
    OutboxMessage,
)
from token_service.services import company, groups

GINA = "gina@globex.test"


@pytest.fixture
def gina(app) -> str:
    """An active customer of Globex (and of no other company)."""
    return make_customer(app, GINA, "globex", password=DEMO_PASSWORD)


@pytest.fixture
def alice(storefront) -> SelfService:
    r = storefront.login(legal_entity_id="acme")
    return SelfService(storefront.client, r.json["access_token"])


def links(app, recipient: str) -> list[tuple[str, str]]:
    """(kind, link) of every message to `recipient`, oldest first."""
    with app.app_context():
        rows = db.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.recipient == recipient)
            .order_by(OutboxMessage.id)
        ).all()
        return [(m.kind, re.search(r"http\S+\?token=\S+", m.body).group(0)) for m in rows]


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def token_of(link: str) -> str:
    return urlsplit(link).query.removeprefix("token=")


def submit(browser, page, **fields):
    form = Form(page.get_data(as_text=True))
    return browser.post(form.action, data={**form.fields, **fields})


def assert_page_headers(response) -> None:
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "text/html"


def signed_in(app, link: str, email: str = GINA, password: str = DEMO_PASSWORD):
    """A browser of its own that opened `link`, signed in on the page and came back."""
    browser = app.test_client()
    page = browser.get(path_of(link))
    assert page.status_code == 200, text(page)
    back = submit(browser, page, email=email, password=password)
    assert back.status_code == 303, text(back)
    assert back.headers["Location"] == path_of(link)
    return browser, browser.get(back.headers["Location"])


def assigned(app, customer: str, entity: str = "acme") -> bool:
    with app.app_context():
        return db.session.get(Assignment, (customer, entity)) is not None


def feed(alice: SelfService) -> list[dict]:
    r = alice.get("/audit-events?limit=200")
    assert r.status_code == 200
    return r.json["items"]


# -- what the inviting company sees: the same for an account and a new address ----------------


def test_the_answer_is_the_same_for_an_account_and_a_new_address(app, alice, gina):
    answers = {email: alice.invite(email) for email in (GINA, "nobody@example.test")}
    repeats = {email: alice.invite(email) for email in answers}
    member = alice.invite("bob@acme.test")  # already ACME's: the same shape, nothing sent

    def shape(r):
        body = dict(r.json)
        for varying in ("id", "email", "created_at", "expires_at"):
            body.pop(varying)
        return r.status_code, sorted(r.json), body

    first, second = (shape(r) for r in answers.values())
    assert first == second == (201, sorted(INVITATION_FIELDS), {**second[2], "status": "pending"})
    for email, r in repeats.items():
        assert r.status_code == 200 and r.json == answers[email].json
    assert gina not in json.dumps([r.json for r in (*answers.values(), *repeats.values())])
    assert member.status_code == 200 and set(member.json) == INVITATION_FIELDS
    assert [kind for kind, _ in links(app, "bob@acme.test")] == []


def test_an_account_is_nobodys_member_until_it_joins(app, alice, gina, storefront):
    members = alice.get("/members").json
    before = {e["id"] for e in feed(alice)}
    ids = {email: alice.invite(email).json["id"] for email in (GINA, "nobody@example.test")}

    assert alice.get("/members").json == members
    assert not assigned(app, gina)
    # The company's list of invitations: by email, alike.
    listed = alice.get("/invitations").json["items"]
    assert [(i["email"], i["status"]) for i in listed] == [
        (GINA, "pending"),
        ("nobody@example.test", "pending"),
    ]
    assert all(set(i) == INVITATION_FIELDS for i in listed)
    # The company's feed: one event per invitation, alike, naming no customer.
    new = [e for e in feed(alice) if e["id"] not in before]
    by_target = {e["target"]: e for e in new}
    assert set(by_target) == set(ids.values()) and len(new) == 2
    for event in new:
        assert (event["action"], event["customer_id"], event["details"]) == (
            "invitation.created",
            None,
            {},
        )
    assert gina not in json.dumps(feed(alice))
    # gina's own view: ACME is not among her companies, and no token acts for it.
    r = storefront.login(GINA, DEMO_PASSWORD)
    assert [e["id"] for e in r.json["legal_entities"]] == ["globex"]
    r = storefront.login(GINA, DEMO_PASSWORD, legal_entity_id="acme")
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
    # Her mail links to the join page; the new address's to the activation page.
    [(kind, link)] = links(app, GINA)
    assert kind == "invitation_join" and urlsplit(link).path == "/invitations/join"
    [(kind, link)] = links(app, "nobody@example.test")
    assert kind == "invitation" and urlsplit(link).path == "/activate"


def test_a_company_feed_never_names_another_company(app, alice, storefront):
    """alice is also a CONTACT of Globex: her switch into ACME is ACME's event, but where she
    came from is not ACME's to read (the seller's feed keeps it)."""
    r = storefront.login(legal_entity_id="globex")
    switched = storefront.refresh(r.json["refresh_token"], legal_entity_id="acme")
    assert switched.status_code == 200 and switched.json["legal_entity_id"] == "acme"
    events = feed(alice)
    [event] = [e for e in events if e["action"] == "session.switched"]
    assert "previous" not in event["details"]
    assert "globex" not in json.dumps(events).lower()
    with app.app_context():
        row = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "session.switched")
        ).one()
        assert row.details == {"previous": "globex"} and row.legal_entity_id == "acme"


# -- the invitee's page -----------------------------------------------------------------------


def test_join_on_the_page_after_signing_in(app, alice, gina, storefront):
    alice.invite(GINA)
    [(_, link)] = links(app, GINA)
    with app.app_context():
        invitation = db.session.scalars(select(Invitation)).one()
        # Only the token's SHA-256 is stored.
        assert invitation.token_hash == hashlib.sha256(token_of(link).encode()).hexdigest()

    browser = app.test_client()
    page = browser.get(path_of(link))
    assert page.status_code == 200
    assert_page_headers(page)
    form = Form(page.get_data(as_text=True))
    assert form.labels == ["Email", "Password"] and form.buttons == ["Sign in"]
    assert set(form.fields) == {"csrf_token", "token", "email", "password"}
    assert form.fields["email"] == ""
    # Nothing of the invitation shows before the invitee has signed in.
    assert "ACME" not in text(page) and "alice" not in text(page)

    refused = submit(browser, page, email=GINA, password="wrong password")
    assert refused.status_code == 401 and "Invalid email or password." in text(refused)
    assert_page_headers(refused)
    browser, page = signed_in(app, link)
    assert page.status_code == 200
    assert_page_headers(page)
    form = Form(page.get_data(as_text=True))
    assert form.buttons == ["Join", "Decline"]
    assert set(form.fields) == {"csrf_token", "token"} and form.fields["token"] == token_of(link)
    assert "ACME Corp" in text(page) and "alice@acme.test" in text(page) and GINA in text(page)
    assert not assigned(app, gina)

    done = submit(browser, page, decision="join")
    assert done.status_code == 200, text(done)
    assert_page_headers(done)
    assert "You joined ACME Corp" in text(done)
    with app.app_context():
        assert db.session.get(Assignment, (gina, "acme")).type == "CONTACT"
        contact = groups.group_of("acme", "CONTACT").id
        assert db.session.get(GroupMember, (contact, gina)) is not None
        invitation = db.session.scalars(select(Invitation)).one()
        assert invitation.accepted_at is not None and invitation.token_hash is None
    assert GINA in {m["email"] for m in alice.get("/members").json["items"]}
    assert [i["status"] for i in alice.get("/invitations").json["items"]] == ["accepted"]
    events = feed(alice)
    assert [(e["action"], e["actor_id"], e["customer_id"]) for e in events[:2]] == [
        ("invitation.accepted", gina, gina),
        ("assignment.created", gina, gina),
    ]
    r = storefront.login(GINA, DEMO_PASSWORD, legal_entity_id="acme")
    assert r.status_code == 200 and r.json["legal_entity_id"] == "acme"
    # Her switch from Globex into ACME shows in ACME's feed without Globex.
    switched = storefront.refresh(r.json["refresh_token"], legal_entity_id="globex")
    switched = storefront.refresh(switched.json["refresh_token"], legal_entity_id="acme")
    assert switched.status_code == 200
    assert "globex" not in json.dumps(feed(alice)).lower()
    # Single use: the link, the page's form and a repeat of the decision are all gone.
    for again in (browser.get(path_of(link)), submit(browser, page, decision="join")):
        assert again.status_code == 404 and "does not work" in text(again)
        assert_page_headers(again)
    assert alice.invite(GINA).status_code == 200  # a member now: the repeat changes nothing


def test_decline_assigns_nothing_and_reads_as_expired(app, alice, gina):
    before = {e["id"] for e in feed(alice)}
    alice.invite(GINA)
    [(_, link)] = links(app, GINA)
    browser, page = signed_in(app, link)
    done = submit(browser, page, decision="decline")
    assert done.status_code == 200 and "declined" in text(done)
    assert not assigned(app, gina)
    with app.app_context():
        invitation = db.session.scalars(select(Invitation)).one()
        assert invitation.declined_at is not None and invitation.token_hash is None
        assert invitation.accepted_at is None
    # What ACME sees is what an expired invitation shows: only an account can decline.
    assert [i["status"] for i in alice.get("/invitations").json["items"]] == ["expired"]
    assert [e["action"] for e in feed(alice) if e["id"] not in before] == ["invitation.created"]
    assert browser.get(path_of(link)).status_code == 404
    # Inviting again sends a new link, as for an expired one.
    r = alice.invite(GINA)
    assert r.status_code == 201 and r.json["status"] == "pending"
    (_, old), (_, new) = links(app, GINA)
    assert old == link and token_of(new) != token_of(link)


def test_another_account_sees_nothing_of_the_invitation(app, alice, gina):
    alice.invite(GINA)
    [(_, link)] = links(app, GINA)
    browser, page = signed_in(app, link, email="bob@acme.test")
    assert page.status_code == 404
    assert_page_headers(page)
    assert "does not work" in text(page)
    assert "ACME" not in text(page) and GINA not in text(page)
    # A crafted decision, with the browser's own CSRF token, changes nothing either.
    csrf = Form(browser.get(path_of(link)).get_data(as_text=True)).fields.get("csrf_token")
    csrf = csrf or browser.get_cookie("__Host-csrf").value
    for decision in ("join", "decline"):
        r = browser.post(
            "/invitations/join",
            data={"csrf_token": csrf, "token": token_of(link), "decision": decision},
        )
        assert r.status_code == 404
    assert not assigned(app, gina) and not assigned(app, "cus_bob", "globex")
    # gina's link still works for gina.
    _, page = signed_in(app, link)
    assert page.status_code == 200 and "ACME Corp" in text(page)


@pytest.mark.parametrize("fields", [{"csrf_token": ""}, {"csrf_token": "forged"}])
def test_a_decision_without_its_csrf_token_is_refused(app, alice, gina, fields):
    alice.invite(GINA)
    [(_, link)] = links(app, GINA)
    browser, page = signed_in(app, link)
    r = submit(browser, page, decision="join", **fields)
    assert r.status_code == 400 and "not sent from this site" in text(r)
    assert_page_headers(r)
    r = submit(browser, page, decision="maybe")
    assert r.status_code == 400 and "Choose Join or Decline." in text(r)
    assert not assigned(app, gina)
    # A cross-site sign-in (no CSRF cookie) is refused as well.
    r = app.test_client().post(
        "/invitations/join/sign-in",
        data={"csrf_token": "x", "token": token_of(link), "email": GINA, "password": DEMO_PASSWORD},
    )
    assert r.status_code == 400 and "Set-Cookie" not in r.headers


def test_the_way_back_from_sign_in_is_never_the_requests(app, alice, gina):
    alice.invite(GINA)
    [(_, link)] = links(app, GINA)
    browser = app.test_client()
    page = browser.get(path_of(link) + "&next=https://evil.test/&redirect_uri=https://evil.test/")
    for token in (token_of(link), "https://evil.test/", "//evil.test", "x" * 5000):
        r = submit(
            browser,
            page,
            email=GINA,
            password=DEMO_PASSWORD,
            token=token,
            next="https://evil.test/",
            redirect_uri="https://evil.test/",
        )
        assert r.status_code == 303
        location = urlsplit(r.headers["Location"])
        assert (location.scheme, location.netloc, location.path) == ("", "", "/invitations/join")


@pytest.mark.parametrize(
    "query", ["", "?token=", "?token=unknown", "?token=" + "x" * 5000, "?token=a&token=b"]
)
def test_a_link_that_does_not_work_says_so_once_signed_in(app, alice, gina, query):
    alice.invite(GINA)
    [(_, link)] = links(app, GINA)
    browser, _ = signed_in(app, link)
    r = browser.get("/invitations/join" + query)
    assert r.status_code == 404 and "does not work" in text(r)
    assert_page_headers(r)


def test_an_expired_or_withdrawn_link_does_not_work(app, alice, gina):
    invitation = alice.invite(GINA).json["id"]
    [(_, link)] = links(app, GINA)
    browser, page = signed_in(app, link)
    with app.app_context():
        row = db.session.get(Invitation, invitation)
        row.expires_at = row.created_at - timedelta(seconds=1)
        db.session.commit()
    assert browser.get(path_of(link)).status_code == 404
    assert submit(browser, page, decision="join").status_code == 404
    assert alice.invite(GINA).status_code == 201  # renewed: a new link
    (_, link) = links(app, GINA)[-1]
    assert browser.get(path_of(link)).status_code == 200
    assert alice.call("DELETE", f"/invitations/{invitation}").status_code == 204
    assert browser.get(path_of(link)).status_code == 404
    assert not assigned(app, gina)


# -- an invited customer with several invitations ----------------------------------------------


def test_activating_one_invitation_sends_join_links_for_the_others(app, client, alice, login):
    make_customer(app, "gus@globex.test", "globex", ["ADMIN"], password=DEMO_PASSWORD)
    gus, _ = login("gus@globex.test", entity="globex")
    assert alice.invite("carol@example.test").status_code == 201
    assert gus.invite("carol@example.test").status_code == 201
    (kind, to_acme), (kind2, to_globex) = links(app, "carol@example.test")
    assert kind == kind2 == "invitation"
    assert accept(client, token_of(to_acme)).status_code == 200
    carol = customer_id(app, "carol@example.test")
    assert assigned(app, carol, "acme") and not assigned(app, carol, "globex")
    # The Globex activation link no longer works: a join link replaced it.
    assert accept(client, token_of(to_globex), "another password").status_code == 404
    kind, join = links(app, "carol@example.test")[-1]
    assert kind == "invitation_join" and "Globex" in _last_subject(app)
    browser, page = signed_in(app, join, "carol@example.test", "a new password")
    assert "Globex" in text(page)
    assert submit(browser, page, decision="join").status_code == 200
    assert assigned(app, carol, "globex")


def _last_subject(app) -> str:
    with app.app_context():
        return db.session.scalars(
            select(OutboxMessage.subject).order_by(OutboxMessage.id.desc())
        ).first()


@pytest.fixture
def login(storefront):
    def call(email, entity, password=DEMO_PASSWORD):
        r = storefront.login(username=email, password=password, legal_entity_id=entity)
        assert r.status_code == 200, r.json
        return SelfService(storefront.client, r.json["access_token"]), r.json

    return call


# -- the migration ----------------------------------------------------------------------------


def test_migration_0005_drops_the_invitations_withdrawn_by_unassigning(
    database_at_0001,  # noqa: F811 (the fixture, imported)
    keys_dir,
):
    """Before 0005 a company withdrew an unaccepted invitation by unassigning the invitee; from
    0005 nothing is assigned before acceptance, so such a link would assign them again."""
    settings = replace(
        Settings.from_env({}),
        database_url=database_at_0001,
        redis_url=None,
        issuer="http://issuer.test",
        keys_dir=keys_dir,
    )
    app = create_app({"SETTINGS": settings, "STORE": MemoryStore(), "TESTING": True})
    now = datetime.now(UTC)
    with app.app_context():
        upgrade(db.engine)
        load_demo()
        db.session.commit()
        db.session.remove()
        with db.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0004")
            for name in ("kept", "withdrawn"):
                connection.execute(
                    sql(
                        "INSERT INTO customers (id, email, status, created_at, updated_at,"
                        " version, entitlements_version) VALUES (:id, :email, 'invited',"
                        " :now, :now, 1, 0)"
                    ),
                    {"id": f"cus_{name}", "email": f"{name}@example.test", "now": now},
                )
                connection.execute(
                    sql(
                        "INSERT INTO invitations (id, legal_entity_id, email, customer_id,"
                        " token_hash, created_at, expires_at) VALUES (:id, 'acme', :email,"
                        " :customer, :hash, :now, :expires)"
                    ),
                    {
                        "id": f"inv_{name}",
                        "email": f"{name}@example.test",
                        "customer": f"cus_{name}",
                        "hash": hashlib.sha256(name.encode()).hexdigest(),
                        "now": now,
                        "expires": now + timedelta(days=1),
                    },
                )
            connection.execute(
                sql(
                    "INSERT INTO assignments (customer_id, legal_entity_id, type, created_at)"
                    " VALUES ('cus_kept', 'acme', 'CONTACT', :now)"
                ),
                {"now": now},
            )
        upgrade(db.engine)
        assert db.session.get(Invitation, "inv_withdrawn") is None
        kept = db.session.get(Invitation, "inv_kept")
        assert kept is not None and kept.declined_at is None
        customer = company.accept_invitation("kept", "a new password")
        assert customer.status == "active" and kept.accepted_at is not None
        db.session.commit()
        db.session.remove()
        db.engine.dispose()


def test_the_mail_limit_and_delivery_are_the_same_for_both(app, alice, gina, monkeypatch):
    """The rate limit counts an account's invitation as a new address's."""
    set_settings(app, monkeypatch, invitation_rate_limit=2)
    assert alice.invite(GINA).status_code == 201
    assert alice.invite("nobody@example.test").status_code == 201
    assert alice.invite("third@example.test").status_code == 429
