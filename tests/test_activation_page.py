"""The activation page (/activate) an invitation's link opens, on both backends: alice (ADMIN of
ACME, demo data) invites carol through /self-service, carol follows the link from the outbox,
sets a password on the page, and signs in with it."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from frontdoor import Form, text
from sqlalchemy import select

from token_service.api.demo_page import DEMO_CLIENT_ID
from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.models import Customer, Invitation, OutboxMessage
from token_service.services.clients import create_client

NEW_PASSWORD = "carol's new password"
FIELDS = {"csrf_token", "token", "password", "confirm_password"}


@pytest.fixture
def link(app, storefront) -> str:
    """The activation link of carol's invitation into ACME, as the outbox holds it."""
    alice = storefront.login(legal_entity_id="acme").json["access_token"]
    r = storefront.client.post(
        "/self-service/invitations",
        json={"email": "carol@acme.test"},
        headers={"Authorization": f"Bearer {alice}"},
    )
    assert r.status_code == 201, r.json
    with app.app_context():
        [message] = db.session.scalars(select(OutboxMessage)).all()
        assert message.recipient == "carol@acme.test"
        return re.search(r"http\S+\?token=\S+", message.body).group(0)


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def token_of(link: str) -> str:
    return urlsplit(link).query.removeprefix("token=")


def activate(client, page, **fields):
    """Submit the page's form with `fields` over its own values."""
    form = Form(page.get_data(as_text=True))
    return client.post(form.action, data={**form.fields, **fields})


def carol(app) -> Customer:
    with app.app_context():
        customer = db.session.scalars(
            select(Customer).where(Customer.email == "carol@acme.test")
        ).one()
        db.session.expunge(customer)
        return customer


def links(response) -> list[str]:
    return re.findall(r'<a href="([^"]*)"', response.get_data(as_text=True))


def assert_page_headers(response) -> None:
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.mimetype == "text/html"


def test_invite_follow_the_link_set_a_password_sign_in(app, client, link, storefront):
    assert urlsplit(link).path == "/activate"  # TOKEN_SERVICE_ACTIVATION_URL's default
    page = client.get(path_of(link))
    assert page.status_code == 200
    assert_page_headers(page)
    form = Form(page.get_data(as_text=True))
    assert form.action == "/activate"
    assert set(form.fields) == FIELDS
    assert form.fields["token"] == token_of(link) and form.fields["csrf_token"]
    assert "carol@acme.test" in text(page) and "ACME" in text(page)
    assert carol(app).status == "invited"

    done = activate(client, page, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert done.status_code == 200, text(done)
    assert_page_headers(done)
    assert "Your account is active" in text(done)
    assert links(done) == []  # no sign-in page of this service to point to (see below)
    assert carol(app).status == "active"
    r = storefront.login(username="carol@acme.test", password=NEW_PASSWORD)
    assert r.status_code == 200, r.json
    assert r.json["legal_entity_id"] == "acme"
    assert storefront.login(username="carol@acme.test", password=DEMO_PASSWORD).status_code == 400


def test_the_page_and_the_api_are_one_rule_the_token_works_once(app, client, link):
    page = client.get(path_of(link))
    assert (
        activate(client, page, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD).status_code
        == 200
    )
    for again in (
        client.get(path_of(link)),
        activate(client, page, password="another password", confirm_password="another password"),
    ):
        assert again.status_code == 404
        assert "does not work any more" in text(again)
        assert_page_headers(again)
    api = client.post(
        "/self-service/invitations/accept",
        json={"token": token_of(link), "password": "another password"},
    )
    assert api.status_code == 404


def test_the_api_accepting_first_makes_the_page_refuse(app, client, link):
    page = client.get(path_of(link))
    api = client.post(
        "/self-service/invitations/accept", json={"token": token_of(link), "password": NEW_PASSWORD}
    )
    assert api.status_code == 200
    r = activate(client, page, password="another password", confirm_password="another password")
    assert r.status_code == 404 and carol(app).password_hash is not None


@pytest.mark.parametrize(
    "fields",
    [{"csrf_token": ""}, {"csrf_token": "forged"}],
    ids=["missing", "wrong"],
)
def test_a_form_without_its_csrf_token_is_refused(app, client, link, fields):
    page = client.get(path_of(link))
    r = activate(client, page, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD, **fields)
    assert r.status_code == 400
    assert "not sent from this site" in text(r)
    assert_page_headers(r)
    assert carol(app).status == "invited"
    # No cookie at all (a cross-site post): refused as well.
    data = {**Form(page.get_data(as_text=True)).fields, "password": NEW_PASSWORD}
    cross_site = app.test_client().post(
        "/activate", data={**data, "confirm_password": NEW_PASSWORD}
    )
    assert cross_site.status_code == 400 and carol(app).status == "invited"


@pytest.mark.parametrize(
    ("password", "confirm", "words"),
    [
        (NEW_PASSWORD, NEW_PASSWORD + "!", "The two passwords are not the same."),
        ("short", "short", "The password needs 8 to 1024 characters."),
        ("", "", "The password needs 8 to 1024 characters."),
        ("tab\tinside it", "tab\tinside it", "must not contain control characters"),
        ("x" * 1025, "x" * 1025, "The password needs 8 to 1024 characters."),
    ],
    ids=["mismatch", "short", "empty", "control", "long"],
)
def test_a_refused_password_is_said_on_the_page(app, client, link, password, confirm, words):
    page = client.get(path_of(link))
    r = activate(client, page, password=password, confirm_password=confirm)
    assert r.status_code == 400
    assert words in text(r)
    assert_page_headers(r)
    again = Form(r.get_data(as_text=True))
    assert set(again.fields) == FIELDS and again.fields["token"] == token_of(link)
    assert carol(app).status == "invited"
    ok = activate(client, r, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert ok.status_code == 200 and carol(app).status == "active"


@pytest.mark.parametrize(
    "query",
    ["", "?token=", "?token=unknown", "?token=" + "x" * 5000, "?token=%ff", "?token=a&token=b"],
)
def test_an_unknown_token_gets_a_page_that_says_so(client, query):
    r = client.get("/activate" + query)
    assert r.status_code == 404
    assert "does not work any more" in text(r)
    assert_page_headers(r)


@pytest.mark.parametrize("query", ["?token=%00", "?token=a%01b", "?x%7f=1"])
def test_control_characters_get_a_page_before_any_lookup(client, query):
    r = client.get("/activate" + query)
    assert r.status_code == 400
    assert "characters that are not allowed" in text(r)
    assert_page_headers(r)


def test_an_expired_link_gets_a_page_that_says_so(app, client, link):
    with app.app_context():
        invitation = db.session.scalars(select(Invitation)).one()
        invitation.expires_at = invitation.created_at - timedelta(seconds=1)
        db.session.commit()
    r = client.get(path_of(link))
    assert r.status_code == 404 and "does not work any more" in text(r)


def test_no_redirect_target_is_taken_from_the_request(client, link):
    page = client.get(path_of(link) + "&next=https://evil.test/&redirect_uri=https://evil.test/")
    done = activate(
        client,
        page,
        password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
        next="https://evil.test/",
        redirect_uri="https://evil.test/",
    )
    assert done.status_code == 200 and "Location" not in done.headers
    assert "evil.test" not in done.get_data(as_text=True)


def test_the_sign_in_link_is_the_demo_page_where_its_client_is_registered(app, client, link):
    with app.app_context():
        create_client(
            DEMO_CLIENT_ID,
            name="Demo storefront",
            confidential=False,
            grant_types=["authorization_code", "refresh_token"],
            scope="openid",
            first_party=True,
            redirect_uris=["http://127.0.0.1:8000/demo"],
        )
        db.session.commit()
    page = client.get(path_of(link))
    done = activate(client, page, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    assert done.status_code == 200 and links(done) == ["/demo"]


def test_the_activation_token_never_reaches_a_log(client, link, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    capfd.readouterr()
    page = client.get(path_of(link))
    activate(client, page, password="short", confirm_password="short")
    activate(client, page, password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    client.get(path_of(link))
    out, err = capfd.readouterr()
    logged = out + err + caplog.text
    assert "/activate" in logged  # the request lines were written, without the token
    assert token_of(link) not in logged
    assert NEW_PASSWORD not in logged
