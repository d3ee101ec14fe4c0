"""`token-service admin ...` and `token-service keys rotate`: the everyday admin tasks from a
shell, with the same effects as the admin API (live tokens, audit)."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from token_service import directory
from token_service.extensions import db
from token_service.keys import KeyRing
from token_service.models import Assignment, AuditEvent, Customer, LegalEntity

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
        assert directory.group_of("initech-uk", "ADMIN").predefined
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
        group = directory.group_of("acme", "BUYER").id
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
