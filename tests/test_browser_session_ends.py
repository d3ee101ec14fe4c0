"""Issue 25, defects 1 and 2: a sign-in cookie ends with the customer's sessions, and a logout
link signs out without asking only the browser session its ID token names. Both backends."""

from __future__ import annotations

import time

import pytest
from conftest import claims_of
from frontdoor import Browser, Form, authorize_params, callback, text
from test_admin import Admin
from test_authorize import exchange, sign_in_to_callback

from token_service.extensions import db
from token_service.models import AuditEvent, BrowserSession


@pytest.fixture
def admin(app):
    # Its own test client: the admin shares no cookie with the customer's browser.
    return Admin(app.test_client(), "admin-cli", app.secrets["admin-cli"])


def _bob_signed_in(browser, client) -> dict:
    params = authorize_params()
    page = browser.authorize(params)
    answer = callback(browser.sign_in(page, email="bob@acme.test"))
    return exchange(client, params, answer["code"]).json


def _silent(browser) -> dict:
    return callback(browser.authorize(authorize_params(prompt="none")))


COUNTERMEASURES = {
    "revoke_all": lambda admin: admin.delete("/customers/cus_bob/sessions"),
    "password_change": lambda admin: admin.patch(
        "/customers/cus_bob", json={"password": "a brand new passphrase"}
    ),
    "password_removed": lambda admin: admin.patch("/customers/cus_bob", json={"password": None}),
    "block_unblock": lambda admin: (
        admin.post("/customers/cus_bob/block"),
        admin.post("/customers/cus_bob/unblock"),
    )[-1],
    "delete": lambda admin: admin.delete("/customers/cus_bob"),
}


@pytest.mark.parametrize("countermeasure", sorted(COUNTERMEASURES))
def test_every_countermeasure_ends_the_sign_in_cookie(
    shop, browser, client, admin, introspect, countermeasure
):
    tokens = _bob_signed_in(browser, client)
    assert "code" in _silent(browser)  # the cookie signs bob in silently until now
    answer = COUNTERMEASURES[countermeasure](admin)
    assert answer.status_code in (200, 204), answer.get_data(as_text=True)
    assert _silent(browser)["error"] == "login_required"
    assert introspect(tokens["access_token"]) == {"active": False}
    with shop.app_context():
        live = db.session.scalars(
            db.select(BrowserSession).where(BrowserSession.ended_at.is_(None))
        ).all()
        assert [row for row in live if row.customer_id == "cus_bob"] == []
    # A fresh sign-in after the countermeasure works as ever (unless bob is gone or has no
    # password any more).
    if countermeasure in ("revoke_all", "block_unblock"):
        assert "access_token" in _bob_signed_in(browser, client)


def test_revoking_one_session_ends_the_sign_in_it_came_from(shop, browser, client, admin):
    tokens = _bob_signed_in(browser, client)
    other = Browser(shop.test_client())
    _bob_signed_in(other, other.client)  # bob on a second device
    sid = claims_of(tokens["access_token"])["sid"]
    assert admin.delete(f"/customers/cus_bob/sessions/{sid}").status_code == 200
    assert _silent(browser)["error"] == "login_required"
    assert "code" in _silent(other)  # the other device's sign-in is not this session's


def test_the_admin_is_named_as_the_actor_who_ended_the_browser_session(
    shop, browser, client, admin
):
    _bob_signed_in(browser, client)
    admin.delete("/customers/cus_bob/sessions")
    with shop.app_context():
        ended = db.session.scalars(
            db.select(AuditEvent).where(AuditEvent.action == "browser_session.ended")
        ).all()
    assert [(e.actor_type, e.actor_id) for e in ended] == [("client", "admin-cli")]


def test_other_customers_keep_their_cookies(shop, client, admin):
    alice = Browser(shop.test_client())
    sign_in_to_callback(alice, authorize_params())
    bob = Browser(client)
    _bob_signed_in(bob, client)
    admin.delete("/customers/cus_bob/sessions")
    assert "code" in _silent(alice)


# -- defect 2: logout CSRF with someone else's ID token ---------------------------------------


def _logout(browser, **query):
    return browser.client.get("/oauth/logout", query_string=query)


def test_another_customers_id_token_does_not_sign_alice_out(shop, client):
    alice = Browser(shop.test_client())
    sign_in_to_callback(alice, authorize_params())
    bob_tokens = _bob_signed_in(Browser(client), client)
    page = _logout(alice, id_token_hint=bob_tokens["id_token"])
    assert page.status_code == 200
    assert Form(page.get_data(as_text=True)).action == "/oauth/logout"  # asked, not done
    assert "code" in _silent(alice)  # still signed in


def test_an_id_token_of_an_earlier_sign_in_asks_first(shop, browser, client):
    """The same customer, but another browser session (`sid`): confirmation, not sign-out."""
    old = exchange(client, *_code(browser)).json
    fresh = Browser(shop.test_client())
    sign_in_to_callback(fresh, authorize_params())
    page = _logout(fresh, id_token_hint=old["id_token"])
    assert page.status_code == 200 and "Sign out" in text(page)
    assert "code" in _silent(fresh)


def _code(browser):
    params = authorize_params()
    return params, sign_in_to_callback(browser, params)["code"]


def test_the_browsers_own_id_token_signs_out_at_once(shop, browser, client, introspect):
    tokens = exchange(client, *_code(browser)).json
    bye = _logout(
        browser,
        id_token_hint=tokens["id_token"],
        post_logout_redirect_uri="http://127.0.0.1:9999/bye",
        state="s1",
    )
    assert bye.status_code == 303
    assert _silent(browser)["error"] == "login_required"
    assert introspect(tokens["access_token"]) == {"active": False}


def test_confirmed_logout_with_a_foreign_hint_ends_only_the_current_session(shop, client):
    alice = Browser(shop.test_client())
    sign_in_to_callback(alice, authorize_params())
    bob = Browser(client)
    bob_tokens = _bob_signed_in(bob, client)
    page = _logout(alice, id_token_hint=bob_tokens["id_token"])
    done = alice.submit(page)
    assert done.status_code == 200 and "signed out" in text(done)
    assert _silent(alice)["error"] == "login_required"
    assert "code" in _silent(bob)  # bob's browser session is not alice's to end


def test_an_expired_hint_of_this_session_asks_first(shop, browser, client, monkeypatch):
    tokens = exchange(client, *_code(browser)).json
    ttl = shop.config["SETTINGS"].access_token_ttl
    later = time.time() + ttl + 120
    monkeypatch.setattr(time, "time", lambda: later)
    page = _logout(browser, id_token_hint=tokens["id_token"])
    assert page.status_code == 200 and Form(page.get_data(as_text=True)).buttons
    monkeypatch.undo()
    assert "code" in _silent(browser)
