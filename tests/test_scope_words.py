"""Issue 27, item 8: every scope of the catalogue has a description in a person's words, and the
consent page shows a third-party client's scopes in them, never raw."""

from __future__ import annotations

import re

from conftest import basic_auth
from frontdoor import REDIRECT_URI, Form, authorize_params

from token_service.clients import forget_client
from token_service.extensions import db
from token_service.models import Client, Scope
from token_service.services.catalogue import SCOPE_DESCRIPTIONS, seed_catalogue
from token_service.services.clients import create_client

SCOPE_NAME = re.compile(r"\b[a-z][a-z0-9]*\.[a-z][a-z0-9_]*\b")


def admin_headers(app, client) -> dict:
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth("admin-cli", app.secrets["admin-cli"]),
    )
    return {"Authorization": f"Bearer {r.json['access_token']}"}


def test_every_predefined_scope_has_words(app):
    with app.app_context():
        rows = db.session.scalars(db.select(Scope).where(Scope.predefined.is_(True))).all()
        assert len(rows) >= len(SCOPE_DESCRIPTIONS)
        for row in rows:
            assert row.description == SCOPE_DESCRIPTIONS[row.name], row.name
    assert SCOPE_DESCRIPTIONS["order.order_read_le"] == "See all orders of your company"
    for words in SCOPE_DESCRIPTIONS.values():
        assert words and not SCOPE_NAME.search(words) and "_" not in words


def test_a_scope_without_a_description_cannot_be_added(app, client):
    headers = admin_headers(app, client)
    for body in (
        {"name": "invoice.invoice_read"},
        {"name": "invoice.invoice_read", "description": ""},
        {"name": "invoice.invoice_read", "description": "   "},
    ):
        r = client.post("/admin/scopes", json=body, headers=headers)
        assert r.status_code == 422, (body, r.json)
        assert "description" in r.json["fields"], r.json
    with app.app_context():
        assert db.session.get(Scope, "invoice.invoice_read") is None
    body = {"name": "invoice.invoice_read", "description": "See your company's invoices"}
    r = client.post("/admin/scopes", json=body, headers=headers)
    assert r.status_code == 201, r.json
    assert r.json["description"] == "See your company's invoices"


def test_an_admin_describes_a_scope_and_migrate_keeps_it(app, client):
    headers = admin_headers(app, client)
    words = {"description": "Look at every order your company placed"}
    r = client.patch("/admin/scopes/order.order_read_le", json=words, headers=headers)
    assert r.status_code == 200, r.json
    assert r.json == {"name": "order.order_read_le", "predefined": True, **words}
    r = client.patch("/admin/scopes/order.order_read_le", json={"description": ""}, headers=headers)
    assert r.status_code == 422 and "description" in r.json["fields"]
    r = client.patch("/admin/scopes/nope.nope", json=words, headers=headers)
    assert r.status_code == 404
    # An existing deployment: offline_access missing, predefined scopes without words (as
    # they were seeded before), custom ones as the admin left them.
    with app.app_context():
        db.session.delete(db.session.get(Scope, "offline_access"))
        db.session.get(Scope, "order.order_create").description = ""
        db.session.get(Scope, "openid").description = ""
        db.session.add(Scope(name="legacy.thing_do", description="", predefined=False))
        db.session.commit()
    ran = app.test_cli_runner().invoke(args=["migrate"])
    assert ran.exit_code == 0, ran.output
    with app.app_context():
        described = dict(db.session.execute(db.select(Scope.name, Scope.description)).all())
        offline = db.session.get(Scope, "offline_access")
        assert (
            offline.predefined
            and described["offline_access"] == SCOPE_DESCRIPTIONS["offline_access"]
        )
    assert described["order.order_create"] == "Place orders for your company"
    assert described["openid"] == SCOPE_DESCRIPTIONS["openid"]
    assert described["order.order_read_le"] == words["description"]  # the admin's own
    assert described["legacy.thing_do"] == ""  # not ours to describe: the page has words


def test_consent_page_says_every_scope_in_plain_words(shop, browser):
    with shop.app_context():
        storefront = db.session.get(Client, "storefront").scope
        db.session.add(Scope(name="legacy.thing_do", description="", predefined=False))
        db.session.commit()
        ceiling = f"{storefront} openid email profile offline_access legacy.thing_do"
        create_client(
            "partner",
            name="Partner app",
            confidential=False,
            grant_types=["authorization_code", "refresh_token"],
            scope=ceiling,
            first_party=False,
            redirect_uris=[REDIRECT_URI],
        )
        db.session.commit()
        forget_client()
    params = authorize_params(client_id="partner", scope=ceiling, legal_entity_id="acme")
    page = browser.sign_in(browser.authorize(params))
    assert Form(page.get_data(as_text=True)).buttons == ["Allow", "Deny"]
    html = page.get_data(as_text=True)
    listed = re.findall(r"<li>([^<]*)</li>", html)
    assert len(listed) == len(ceiling.split())
    assert "See all orders of your company" in listed
    assert "Stay signed in: keep access when you are away" in listed
    assert "Legacy: thing do" in listed  # a row without words from before still gets some
    for line in listed:
        assert not SCOPE_NAME.search(line) and "_" not in line, line


def test_seed_gives_a_configured_scope_words(app, monkeypatch):
    """A template bundle may name a scope we have no words for: it is described from its
    name rather than left blank."""
    templates = app.config["SETTINGS"].group_templates
    monkeypatch.setitem(templates, "BUYER", templates["BUYER"] + " invoice.invoice_read_le")
    with app.app_context():
        seed_catalogue()
        db.session.commit()
        scope = db.session.get(Scope, "invoice.invoice_read_le")
        assert scope.predefined and scope.description == "Invoice: invoice read le"
