"""`token-service admin ...`, `keys rotate`, `clients rotate-secret`, `customers create` and
`demo`: the everyday admin tasks from a shell, with the same effects as the admin API (live
tokens, audit)."""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import basic_auth
from sqlalchemy import select

from token_service import cli
from token_service.extensions import db
from token_service.keys import KeyRing
from token_service.models import Assignment, AuditEvent, Customer, LegalEntity, OutboxMessage
from token_service.services import groups

INACTIVE = {"active": False}


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_companies_create_and_list(app, runner):
    r = runner.invoke(args=["admin", "companies", "create", "Initech", "--id", "initech"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        args=[
            "admin",
            "companies",
            "create",
            "Initech UK",
            "--id",
            "initech-uk",
            "--parent",
            "initech",
        ]
    )
    assert r.exit_code == 0, r.output
    with app.app_context():
        sub = db.session.get(LegalEntity, "initech-uk")
        assert (sub.type, sub.parent_id) == ("SUBSIDIARY", "initech")
        assert groups.group_of("initech-uk", "ADMIN").predefined
        actors = db.session.execute(
            select(AuditEvent.actor_type, AuditEvent.actor_id).where(
                AuditEvent.action == "legal_entity.created"
            )
        ).all()
        assert len(actors) == 2 and all(kind == "system" for kind, _ in actors)
        assert all(who.startswith("cli:") for _, who in actors)
    r = runner.invoke(args=["admin", "companies", "list", "--name", "INITECH"])
    assert r.exit_code == 0
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["initech", "initech-uk"]
    r = runner.invoke(args=["admin", "companies", "create", "Orphan", "--parent", "nowhere"])
    assert r.exit_code != 0 and "parent legal entity not found" in r.output


def test_customers_assign(app, runner):
    r = runner.invoke(
        args=["admin", "customers", "assign", "BOB@acme.test", "globex", "--type", "BILLING"]
    )
    assert r.exit_code == 0, r.output
    with app.app_context():
        bob = db.session.scalar(select(Customer.id).where(Customer.email == "bob@acme.test"))
        assert db.session.get(Assignment, (bob, "globex")).type == "BILLING"
    again = runner.invoke(args=["admin", "customers", "assign", "bob@acme.test", "globex"])
    assert again.exit_code != 0 and "already assigned" in again.output
    nobody = runner.invoke(args=["admin", "customers", "assign", "nobody@x.test", "globex"])
    assert nobody.exit_code != 0


def test_groups_set_scopes_stops_live_tokens(app, runner, storefront, introspect):
    login = storefront.login("bob@acme.test")
    r = runner.invoke(
        args=[
            "admin",
            "groups",
            "set-scopes",
            "--legal-entity",
            "acme",
            "--code",
            "BUYER",
            "order.order_create order.order_read_le",
        ]
    )
    assert r.exit_code == 0, r.output
    assert introspect(login.json["access_token"]) == INACTIVE
    refreshed = storefront.refresh(login.json["refresh_token"])
    assert "order.order_read_le" in refreshed.json["scope"].split()
    with app.app_context():
        group = groups.group_of("acme", "BUYER").id
    r = runner.invoke(args=["admin", "groups", "set-scopes", group, "no.such_scope"])
    assert r.exit_code != 0 and "unknown scopes" in r.output
    r = runner.invoke(args=["admin", "groups", "set-scopes"])
    assert r.exit_code != 0


def test_keys_rotate(app, runner, tmp_path, monkeypatch):
    shared = app.extensions["keyring"]
    for path in shared.keys_dir.glob("*.pem"):
        shutil.copy2(path, tmp_path / path.name)
    ring = KeyRing(tmp_path, shared.retention_seconds)
    monkeypatch.setitem(app.extensions, "keyring", ring)
    before = ring.current.kid
    r = runner.invoke(args=["keys", "rotate"])
    assert r.exit_code == 0, r.output
    assert ring.current.kid != before
    assert f"was {before}" in r.output
    with app.app_context():
        event = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "signing_key.rotated")
        ).one()
        assert (event.target, event.details["previous"]) == (ring.current.kid, before)


# -- the demo's secrets, rotate-secret, customers create (issue 27, item 7) --------------------


def _cli_events(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        events = list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        db.session.expunge_all()
    assert all(e.actor_type == "system" and e.actor_id.startswith("cli:") for e in events)
    return events


def _client_token(client, client_id: str, secret: str):
    return client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    )


@pytest.mark.parametrize("args", [["demo"], ["init", "--demo"]])
def test_demo_again_keeps_the_secrets(app, client, runner, args):
    r = runner.invoke(args=args)
    assert r.exit_code == 0, r.output
    assert "secret:" not in r.output
    assert "client admin-cli exists: its secret is unchanged" in r.output
    assert "clients rotate-secret order-service" in r.output
    for client_id in ("order-service", "admin-cli"):
        assert _client_token(client, client_id, app.secrets[client_id]).status_code == 200


def test_clients_rotate_secret(app, client, runner):
    r = runner.invoke(args=["clients", "rotate-secret", "order-service"])
    assert r.exit_code == 0, r.output
    secret = re.fullmatch(r"client order-service secret: (\S+)\n", r.stdout).group(1)
    assert _client_token(client, "order-service", app.secrets["order-service"]).status_code == 401
    assert _client_token(client, "order-service", secret).status_code == 200
    [event] = _cli_events(app, "client.secret_rotated")
    assert event.target == "order-service"
    public = runner.invoke(args=["clients", "rotate-secret", "storefront"])
    assert public.exit_code == 1 and "a public client has no secret" in public.output
    missing = runner.invoke(args=["clients", "rotate-secret", "nobody"])
    assert missing.exit_code == 1 and "client not found" in missing.output


def _status(app, email: str) -> tuple[str, bool, list[str]]:
    with app.app_context():
        customer = db.session.scalars(select(Customer).where(Customer.email == email)).one()
        entities = db.session.scalars(
            select(Assignment.legal_entity_id).where(Assignment.customer_id == customer.id)
        ).all()
        return customer.status, customer.password_hash is not None, sorted(entities)


def test_customers_create_password_stdin(app, runner, storefront):
    password = "carol s own password"
    r = runner.invoke(
        args=[
            "customers",
            "create",
            "Carol@acme.test",
            "--legal-entity",
            "acme",
            "--password-stdin",
        ],
        input=password + "\n",
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.endswith("carol@acme.test active\n")
    assert _status(app, "carol@acme.test") == ("active", True, ["acme"])
    assert storefront.login("carol@acme.test", password).status_code == 200
    # The admin API's events for the same change (api/admin/customers.py), actor system/cli.
    [created] = _cli_events(app, "customer.created")
    [assigned] = _cli_events(app, "assignment.created")
    assert (assigned.customer_id, assigned.target) == (created.customer_id, "acme")
    assert (assigned.legal_entity_id, assigned.details) == (None, {"type": "CONTACT"})
    short = runner.invoke(
        args=["customers", "create", "d@acme.test", "--password-stdin"], input="x"
    )
    assert short.exit_code == 2 and "8 to 1024 characters" in short.output
    empty = runner.invoke(args=["customers", "create", "d@acme.test", "--password-stdin"], input="")
    assert empty.exit_code == 2 and "holds no password" in empty.output
    taken = runner.invoke(args=["customers", "create", "carol@acme.test"], input=password)
    assert taken.exit_code == 1 and "exists" in taken.output


def test_customers_create_without_a_terminal_invites(app, client, runner, storefront):
    r = runner.invoke(args=["customers", "create", "dana@acme.test", "--legal-entity", "acme"])
    assert r.exit_code == 0, r.output
    assert "dana@acme.test invited" in r.output
    assert "notifications send" in r.output  # no TOKEN_SERVICE_SMTP_URL in the tests
    assert _status(app, "dana@acme.test") == ("invited", False, [])  # assigned once accepted
    with app.app_context():
        [mail] = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == "dana@acme.test")
        ).all()
        token = re.search(r"\?token=(\S+)", mail.body).group(1)
    assert [e.legal_entity_id for e in _cli_events(app, "invitation.created")] == ["acme"]
    accepted = client.post(
        "/self-service/invitations/accept", json={"token": token, "password": "dana s password"}
    )
    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    assert _status(app, "dana@acme.test") == ("active", True, ["acme"])
    assert storefront.login("dana@acme.test", "dana s password").status_code == 200


def test_customers_create_without_password_or_entity(app, runner, storefront):
    r = runner.invoke(args=["customers", "create", "erin@acme.test"])
    assert r.exit_code == 0, r.output
    assert "cannot sign in until one is set" in r.output
    assert _status(app, "erin@acme.test") == ("active", False, [])
    r = runner.invoke(
        args=["customers", "set-password", "ERIN@acme.test", "--password-stdin"],
        input="erin s password\n",
    )
    assert r.exit_code == 0, r.output
    assert storefront.login("erin@acme.test", "erin s password").status_code == 200
    [event] = _cli_events(app, "customer.updated")
    assert event.details == {"changed": ["password"]}
    runner.invoke(args=["customers", "create", "fay@acme.test", "--legal-entity", "acme"])
    invited = runner.invoke(args=["customers", "set-password", "fay@acme.test"], input="x" * 9)
    assert invited.exit_code == 1 and "activation link" in invited.output


def test_customers_create_prompts_at_a_terminal(app, runner, monkeypatch):
    monkeypatch.setattr(cli, "_at_terminal", lambda: True)
    r = runner.invoke(
        args=["customers", "create", "gus@acme.test"], input="gus s password\ngus s password\n"
    )
    assert r.exit_code == 0, r.output
    assert "Password" in r.output and "Repeat for confirmation" in r.output
    assert _status(app, "gus@acme.test") == ("active", True, [])
