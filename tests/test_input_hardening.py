"""Issue 25, defects 5, 6, 7 and 9: what a request's text may be is decided once
(token_service/inputs.py) and every surface answers bad text in its own error shape: numbers
in ASCII digits only, JSON nested at most so deep, no control character reaching a query, and
one form of an email address. Both backends; the NUL cases matter on PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import Storefront, basic_auth
from frontdoor import Browser, authorize_params, callback, register, text
from test_admin import Admin
from test_emporix import Emporix, logged_in

from token_service import metrics
from token_service.demo import DEMO_PASSWORD
from token_service.inputs import (
    MAX_JSON_DEPTH,
    InvalidEmail,
    InvalidJson,
    ascii_int,
    normalize_email,
    parse_json,
)

EMPORIX_ERROR = {"status", "type", "message"}
IAM_ERROR = {"code", "status", "message", "details"}


def backend_errors() -> float:
    return metrics.BACKEND_ERRORS.labels("database")._value.get()


# -- defect 5: numbers are ASCII digits -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("0", 0),
        ("17", 17),
        ("007", 7),
        *[("²", None), ("①", None), ("٣", None), ("１", None), ("𝟙", None)],
        *[("-1", None), (" 1", None), ("1 ", None), ("1e3", None), ("", None), ("1" * 11, None)],
    ],
)
def test_ascii_int_reads_ascii_digits_only(raw, number):
    assert ascii_int(raw) == number


@pytest.mark.parametrize("max_age", ["²", "①", "٣", "１", "𝟙", "-5", "+5", "5.0", "0x10"])
def test_max_age_in_any_other_digits_is_invalid_request(app, client, max_age):
    register(app)
    answer = callback(Browser(client).authorize(authorize_params(max_age=max_age)))
    assert answer["error"] == "invalid_request"


# -- defect 6: deep JSON is the surface's own 400 ---------------------------------------------


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_parse_json_bounds_nesting_and_refuses_ambiguity():
    assert parse_json(deep(MAX_JSON_DEPTH)) == parse_json(deep(MAX_JSON_DEPTH))
    for body in (deep(MAX_JSON_DEPTH + 1), deep(200_000), '{"a": 1, "a": 2}', "NaN", b"\xff"):
        with pytest.raises(InvalidJson):
            parse_json(body)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_deep_json_is_a_400_in_every_surfaces_shape(app, client, depth):
    body = '{"email": ' + deep(depth) + ', "password": "x"}'
    shop = Emporix(client)
    assert shop.anonymous_login().status_code == 200
    r = client.post(
        "/customer/demo/login",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {shop.anonymous}"},
    )
    assert r.status_code == 400 and set(r.json) == EMPORIX_ERROR
    alice = logged_in(shop)["access_token"]
    r = client.post(
        "/iam/demo/groups/anything/users",
        data='{"userId": ' + deep(depth) + "}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {alice}"},
    )
    assert r.status_code == 400 and set(r.json) == IAM_ERROR
    storefront = Storefront(client)
    own = storefront.login(legal_entity_id="acme").json["access_token"]
    r = client.post(
        "/self-service/invitations",
        data='{"email": ' + deep(depth) + "}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {own}"},
    )
    assert r.status_code == 400 and set(r.json) == {"error", "message"}
    admin = Admin(client, "admin-cli", app.secrets["admin-cli"])
    r = admin.client.post(
        "/admin/legal-entities",
        data='{"name": ' + deep(depth) + "}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {admin.token}"},
    )
    assert r.status_code == 400 and set(r.json) == {"error", "message"}


# -- defect 7: a NUL never reaches the database -----------------------------------------------


def test_nul_in_the_sign_in_forms_email_is_an_ordinary_failure(app, client):
    register(app)
    before = backend_errors()
    browser = Browser(client)
    page = browser.authorize(authorize_params())
    r = browser.sign_in(page, email="alice@acme.test\x00")
    assert r.status_code in (400, 401) and "text/html" in r.content_type
    r = browser.sign_in(page, email="al\x01ice@acme.test")
    assert r.status_code in (400, 401)
    assert backend_errors() == before


@pytest.mark.parametrize("value", ["x\x00", "x\x01y", "\x7f", "x\x85"])
def test_control_characters_in_logout_parameters_are_a_400_page(app, client, value):
    before = backend_errors()
    for name in ("client_id", "state", "post_logout_redirect_uri", "id_token_hint"):
        r = client.get("/oauth/logout", query_string={name: value})
        assert r.status_code == 400 and "text/html" in r.content_type
        assert "characters that are not allowed" in text(r)
    assert backend_errors() == before


@pytest.mark.parametrize("client_id", ["order-service\x00", "x\x00", "a\x1fb", "\x00"])
def test_control_characters_in_basic_client_ids_are_invalid_client(app, client, client_id):
    before = backend_errors()
    raw = base64.b64encode(f"{client_id}:secret".encode()).decode()
    headers = {"Authorization": f"Basic {raw}"}
    for path, data in (
        ("/oauth/token", {"grant_type": "client_credentials"}),
        ("/oauth/introspect", {"token": "x"}),
        ("/oauth/revoke", {"token": "x"}),
    ):
        r = client.post(path, data=data, headers=headers)
        assert r.status_code == 401 and r.json["error"] == "invalid_client", (path, r.json)
    # Percent-encoded inside the credentials (RFC 6749 §2.3.1 form-encodes them) as well.
    encoded = base64.b64encode(b"order%2Dservice%00:secret").decode()
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {encoded}"},
    )
    assert r.status_code == 401 and r.json["error"] == "invalid_client"
    assert backend_errors() == before


def test_control_characters_in_form_parameters_are_invalid_request(app, storefront):
    for params in (
        {"grant_type": "password", "username": "alice@acme.test\x01", "password": "x"},
        {"grant_type": "refresh_token", "refresh_token": "x", "legal_entity_id": "acme\x00"},
        {"grant_type": "password\x7f", "username": "a", "password": "b"},
    ):
        r = storefront.token(**params)
        assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_a_value_the_database_refuses_is_a_400_not_an_outage(app, client):
    """Whatever gets past inputs.py: PostgreSQL's DataError is the request's fault."""
    admin = Admin(client, "admin-cli", app.secrets["admin-cli"])
    before = backend_errors()
    r = admin.get("/customers/cus%00bob")
    assert r.status_code in (400, 404) and set(r.json) == {"error", "message"}
    r = admin.get("/audit-events?customer_id=a%00b")
    assert r.status_code in (400, 422) and set(r.json) >= {"error", "message"}
    assert backend_errors() == before


# -- defect 9: one form of an email address ---------------------------------------------------


@pytest.mark.parametrize(
    "lookalike",
    [
        "alice\u200b@acme.test",  # ZERO WIDTH SPACE
        "al\u00adice@acme.test",  # SOFT HYPHEN
        "\ufeffalice@acme.test",  # BYTE ORDER MARK
        "alice@acme\u200d.test",  # ZERO WIDTH JOINER
        "\u0430lice@acme.test",  # CYRILLIC SMALL LETTER A
        "alice@\u0430cme.test",
        "\u03b1lice@acme.test",  # GREEK SMALL LETTER ALPHA
        "ali ce@acme.test",
        "alice@acme\u2028.test",  # LINE SEPARATOR
    ],
)
def test_invisible_and_mixed_script_addresses_are_refused(lookalike):
    with pytest.raises(InvalidEmail):
        normalize_email(lookalike)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("ａｌｉｃｅ@acme.test", "alice@acme.test"),  # fullwidth
        ("  Alice@ACME.Test ", "alice@acme.test"),
        ("ＡＬＩＣＥ＠ＡＣＭＥ．ＴＥＳＴ", "alice@acme.test"),
        ("josé@exämple.de", "josé@exämple.de"),
        ("иван@пример.рф", "иван@пример.рф"),
        ("ivan@пример.com", "ivan@пример.com"),
        ("山田太郎@example.jp", "山田太郎@example.jp"),
        ("やまだ@例え.jp", "やまだ@例え.jp"),
    ],
)
def test_addresses_have_one_form(raw, normal):
    assert normalize_email(raw) == normal


def test_lookalikes_never_become_a_second_customer(app, client):
    admin = Admin(client, "admin-cli", app.secrets["admin-cli"])
    r = admin.post("/customers", json={"email": "ａｌｉｃｅ@acme.test"})
    assert r.status_code == 409  # alice's own address
    for lookalike in ("alice\u200b@acme.test", "\u0430lice@acme.test"):
        r = admin.post("/customers", json={"email": lookalike})
        assert r.status_code in (400, 422), r.json
        assert "email" in json.dumps(r.json)
    r = admin.patch("/customers/cus_bob", json={"email": "b\u200bob@acme.test"})
    assert r.status_code in (400, 422)
    total = admin.get("/customers?limit=100").json["items"]
    assert sorted(c["email"] for c in total) == sorted({c["email"] for c in total})


def test_self_service_invitations_take_one_form_of_an_address(app, client, storefront):
    own = storefront.login(legal_entity_id="acme").json["access_token"]
    headers = {"Authorization": f"Bearer {own}"}
    for lookalike in ("carol\u200b@acme.test", "c\u0430rol@acme.test"):
        r = client.post("/self-service/invitations", json={"email": lookalike}, headers=headers)
        assert r.status_code in (400, 422) and set(r.json) >= {"error", "message"}
    first = client.post(
        "/self-service/invitations", json={"email": "ｃａｒｏｌ@acme.test"}, headers=headers
    )
    again = client.post(
        "/self-service/invitations", json={"email": "carol@acme.test"}, headers=headers
    )
    assert first.status_code == 201 and again.status_code == 200  # one invitation, one address


def test_sign_in_takes_any_form_of_the_address(app, storefront, client):
    r = storefront.login(username="ＡＬＩＣＥ@acme.test")
    assert r.status_code == 200
    r = storefront.login(username="alice\u200b@acme.test")
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
    shop = Emporix(client)
    shop.anonymous_login()
    assert shop.login(email=" Alice@ACME.test", password=DEMO_PASSWORD).status_code == 200


def test_the_throttle_counts_one_account_however_it_is_typed(app, storefront):
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for spelling in ["alice@acme.test", "ＡＬＩＣＥ@acme.test", "Alice@Acme.test"] * free:
        last = storefront.login(username=spelling, password="wrong")
    assert last.status_code == 429


def test_basic_auth_header_helper_still_authenticates(app, client):
    headers = basic_auth("order-service", app.secrets["order-service"])
    r = client.post("/oauth/introspect", data={"token": "x"}, headers=headers)
    assert r.status_code == 200 and r.json == {"active": False}
