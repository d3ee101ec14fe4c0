"""Client registration by RFC 7591 metadata (issue 27, item 2): the admin API's names and
answers, initial access tokens, the registration endpoint (RFC 7591) and the client
configuration endpoint (RFC 7592). Both backends."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from frontdoor import REDIRECT_URI, Form, authorize_params, callback
from sqlalchemy import select, update
from test_admin import Admin

from token_service import registration_tokens
from token_service.extensions import db
from token_service.models import AuditEvent, Client, InitialAccessToken, utcnow

REDIRECT = "https://shop.example.com/callback"
METADATA = {
    "client_name": "Example Shop",
    "redirect_uris": [REDIRECT],
    "post_logout_redirect_uris": ["https://shop.example.com/"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "scope": "openid email offline_access",
    "client_uri": "https://shop.example.com/",
    "logo_uri": "https://shop.example.com/logo.png",
    "policy_uri": "https://shop.example.com/privacy",
    "tos_uri": "https://shop.example.com/terms",
    "contacts": ["ops@shop.example.com"],
    "backchannel_logout_uri": "https://shop.example.com/backchannel",
    "backchannel_logout_session_required": True,
}


@pytest.fixture
def admin(app, client) -> Admin:
    return Admin(client, "admin-cli", app.secrets["admin-cli"])


def _iat(admin: Admin, uses: int = 1, expires_in: int = 600) -> str:
    r = admin.post("/initial-access-tokens", json={"expires_in": expires_in, "uses": uses})
    assert r.status_code == 201, r.json
    assert set(r.json) >= {"token", "expires_at", "uses_left"}
    assert r.json["uses_left"] == uses
    return r.json["token"]


def _register(client, token: str | None, body: dict):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/oauth/register", json=body, headers=headers)


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- (a) the admin API takes and answers RFC 7591 metadata -----------------------------------


def test_admin_create_with_rfc7591_names_makes_a_public_client(admin):
    body = {"client_id": "spa", **METADATA, "token_endpoint_auth_method": "none"}
    r = admin.post("/clients", json=body)
    assert r.status_code == 201, r.json
    got = r.json
    assert got["client_secret"] is None
    assert got["token_endpoint_auth_method"] == "none"
    assert got["confidential"] is False
    assert got["client_name"] == got["name"] == "Example Shop"
    assert got["client_secret_expires_at"] == 0
    assert isinstance(got["client_id_issued_at"], int) and got["client_id_issued_at"] > 0
    for name, value in METADATA.items():
        if name == "scope":
            assert set(got["scope"].split()) == set(value.split())
        else:
            assert got[name] == value, name
    again = admin.get("/clients/spa").json
    assert {k: again[k] for k in METADATA} == {k: got[k] for k in METADATA}


def test_admin_create_confidential_by_method_and_defaults(admin):
    r = admin.post(
        "/clients",
        json={
            "client_id": "svc",
            "client_name": "Service",
            "token_endpoint_auth_method": "client_secret_post",
            "redirect_uris": [REDIRECT],
        },
    )
    assert r.status_code == 201, r.json
    assert r.json["client_secret"]
    # Stored: a confidential client, which may use basic or post; answered as basic.
    assert r.json["token_endpoint_auth_method"] == "client_secret_basic"
    assert r.json["grant_types"] == ["authorization_code"]  # RFC 7591 §2 default
    assert r.json["response_types"] == ["code"]
    assert r.json["contacts"] == [] and r.json["logo_uri"] is None


@pytest.mark.parametrize(
    ("extra", "fields"),
    [
        ({"confidential": True, "token_endpoint_auth_method": "none"}, {"confidential"}),
        (
            {"confidential": False, "token_endpoint_auth_method": "client_secret_basic"},
            {"confidential"},
        ),
        (
            {"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]},
            {"grant_types"},
        ),
        (
            {"grant_types": ["client_credentials"], "response_types": ["code"]},
            {"response_types", "grant_types"},
        ),
        ({"name": "A", "client_name": "B"}, {"client_name", "name"}),
        ({"response_types": ["token"]}, {"response_types[0]"}),
        ({"token_endpoint_auth_method": "private_key_jwt"}, {"token_endpoint_auth_method"}),
        ({"logo_uri": "http://shop.example.com/logo.png"}, {"logo_uri"}),
        ({"tos_uri": "not a uri"}, {"tos_uri"}),
        ({"contacts": ["nobody"]}, {"contacts[0]"}),
        ({"backchannel_logout_uri": "https://shop.example.com/bc#x"}, {"backchannel_logout_uri"}),
        ({"backchannel_logout_uri": "http://shop.example.com/bc"}, {"backchannel_logout_uri"}),
        ({"backchannel_logout_session_required": "yes"}, {"backchannel_logout_session_required"}),
    ],
)
def test_admin_conflicts_and_invalid_metadata_are_named(admin, extra, fields):
    body = {"client_id": "bad", "redirect_uris": [REDIRECT], **extra}
    r = admin.post("/clients", json=body)
    assert r.status_code in (400, 422), r.json
    assert fields <= set(r.json.get("fields", {})), r.json
    assert admin.get("/clients/bad").status_code == 404


def test_admin_loopback_http_is_accepted(admin):
    body = {
        "client_id": "dev",
        "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://127.0.0.1:8080/cb"],
        "logo_uri": "http://localhost:8080/logo.png",
        "backchannel_logout_uri": "http://127.0.0.1:8080/bc",
    }
    r = admin.post("/clients", json=body)
    assert r.status_code == 201, r.json
    assert r.json["backchannel_logout_uri"] == "http://127.0.0.1:8080/bc"


def test_admin_patch_takes_rfc7591_names(admin):
    admin.post(
        "/clients", json={"client_id": "spa", **METADATA, "token_endpoint_auth_method": "none"}
    )
    r = admin.patch(
        "/clients/spa",
        json={
            "client_name": "Renamed",
            "logo_uri": None,
            "contacts": ["a@shop.example.com", "b@shop.example.com"],
            "backchannel_logout_session_required": False,
            "token_endpoint_auth_method": "none",
        },
    )
    assert r.status_code == 200, r.json
    assert r.json["client_name"] == r.json["name"] == "Renamed"
    assert r.json["logo_uri"] is None
    assert r.json["policy_uri"] == METADATA["policy_uri"]  # not given: kept
    assert r.json["contacts"] == ["a@shop.example.com", "b@shop.example.com"]
    assert r.json["backchannel_logout_session_required"] is False
    r = admin.patch("/clients/spa", json={"token_endpoint_auth_method": "client_secret_basic"})
    assert r.status_code == 422
    assert "token_endpoint_auth_method" in r.json["fields"]


# -- (b) initial access tokens and the registration endpoint ---------------------------------


def test_discovery_names_the_registration_endpoint(app, client):
    issuer = app.config["SETTINGS"].issuer
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        assert client.get(path).json["registration_endpoint"] == f"{issuer}/oauth/register"


def test_registration_is_closed_without_a_valid_initial_access_token(app, client, admin):
    for token in (None, "not-a-token"):
        r = _register(client, token, METADATA)
        assert r.status_code == 401
        assert r.json["error"] == "invalid_token"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    token = _iat(admin)
    with app.app_context():
        db.session.execute(
            update(InitialAccessToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    assert _register(client, token, METADATA).status_code == 401


def test_registration_answers_rfc7591_and_uses_the_token_up(app, client, admin):
    token = _iat(admin, uses=1)
    r = _register(client, token, METADATA)
    assert r.status_code == 201, r.json
    assert r.headers["Cache-Control"] == "no-store"
    got = r.json
    issuer = app.config["SETTINGS"].issuer
    assert got["client_secret"] and got["client_secret_expires_at"] == 0
    assert got["client_id_issued_at"] > 0
    assert got["token_endpoint_auth_method"] == "client_secret_basic"
    assert got["registration_access_token"]
    assert got["registration_client_uri"] == f"{issuer}/oauth/register/{got['client_id']}"
    for name, value in METADATA.items():
        if name == "scope":
            assert set(got["scope"].split()) == set(value.split())
        else:
            assert got[name] == value, name
    # Used up.
    assert _register(client, token, METADATA).json["error"] == "invalid_token"
    # Third party, stored with its metadata; the registration access token only as a hash.
    shown = admin.get(f"/clients/{got['client_id']}").json
    assert shown["first_party"] is False
    assert shown["logo_uri"] == METADATA["logo_uri"]
    with app.app_context():
        row = db.session.get(Client, got["client_id"])
        assert row.registration_access_token_hash == registration_tokens.hash_token(
            got["registration_access_token"]
        )
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "client.registered"))
        assert db.session.scalar(
            select(AuditEvent).where(AuditEvent.action == "initial_access_token.created")
        )
    # Its secret authenticates it at the token endpoint (a bad grant, not a bad client).
    r = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "nope"},
        auth=(got["client_id"], got["client_secret"]),
    )
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"


def test_registration_of_a_public_client_with_defaults(client, admin):
    token = _iat(admin)
    r = _register(
        client, token, {"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    )
    assert r.status_code == 201, r.json
    assert "client_secret" not in r.json
    assert r.json["token_endpoint_auth_method"] == "none"
    assert r.json["grant_types"] == ["authorization_code"]
    assert r.json["scope"] == "openid"
    assert r.json["client_name"] == r.json["client_id"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"grant_types": ["client_credentials"]}, "invalid_client_metadata"),
        ({"grant_types": ["password"]}, "invalid_client_metadata"),
        ({"scope": "openid admin.manage"}, "invalid_client_metadata"),
        ({"scope": "token.introspect"}, "invalid_client_metadata"),
        ({"scope": "openid no.such_scope"}, "invalid_client_metadata"),
        ({"redirect_uris": ["http://evil.example.com/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://shop.example.com/cb#frag"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"logo_uri": "ftp://shop.example.com/x"}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({"response_types": ["token"]}, "invalid_client_metadata"),
    ],
)
def test_registration_refusals_follow_rfc7591(client, admin, body, error):
    token = _iat(admin)
    r = _register(client, token, {**METADATA, **body})
    assert r.status_code == 400, r.json
    assert r.json["error"] == error, r.json
    assert r.json["error_description"]
    # A refused registration spends nothing.
    assert _register(client, token, METADATA).status_code == 201


def test_registration_ignores_unknown_metadata(client, admin):
    r = _register(client, _iat(admin), {**METADATA, "software_id": "x", "first_party": True})
    assert r.status_code == 201, r.json
    assert admin.get(f"/clients/{r.json['client_id']}").json["first_party"] is False


def test_one_use_token_registers_exactly_once_under_concurrency(app, admin):
    token = _iat(admin, uses=1)
    barrier = threading.Barrier(2)
    statuses = []

    def attempt():
        local = app.test_client()
        barrier.wait()
        statuses.append(_register(local, token, METADATA).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 401]
    with app.app_context():
        assert db.session.scalar(select(InitialAccessToken.uses_left)) == 0


def test_admin_initial_access_token_needs_manage_and_valid_numbers(admin):
    for body in ({"uses": 0}, {"expires_in": 0}, {"uses": "1"}, {"other": 1}):
        assert admin.post("/initial-access-tokens", json=body).status_code == 422


def test_cli_makes_an_initial_access_token(app, client):
    result = app.test_cli_runner().invoke(
        args=["clients", "initial-access-token", "--uses", "2", "--expires-in", "60"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.split("initial access token: ")[1].split()[0]
    assert _register(client, token, METADATA).status_code == 201
    assert _register(client, token, METADATA).status_code == 201
    assert _register(client, token, METADATA).status_code == 401


# -- (c) RFC 7592: read, update, delete with the registration access token -------------------


def test_rfc7592_read_update_delete(app, client, admin):
    registered = _register(client, _iat(admin), METADATA).json
    other = _register(client, _iat(admin), METADATA).json
    uri = registered["registration_client_uri"].removeprefix(app.config["SETTINGS"].issuer)
    rat = registered["registration_access_token"]

    r = client.get(uri, headers=_bearer(rat))
    assert r.status_code == 200, r.json
    assert r.json["client_id"] == registered["client_id"]
    assert "client_secret" not in r.json
    assert r.json["registration_access_token"] == rat
    assert r.json["logo_uri"] == METADATA["logo_uri"]

    for headers in ({}, _bearer("wrong"), _bearer(other["registration_access_token"])):
        assert client.get(uri, headers=headers).status_code == 401
    assert client.get("/oauth/register/nobody", headers=_bearer(rat)).status_code == 401

    replaced = {
        "client_id": registered["client_id"],
        "client_name": "Renamed",
        "redirect_uris": ["https://shop.example.com/other"],
        "scope": "openid",
    }
    r = client.put(uri, json=replaced, headers=_bearer(rat))
    assert r.status_code == 200, r.json
    assert r.json["client_name"] == "Renamed"
    assert r.json["redirect_uris"] == ["https://shop.example.com/other"]
    assert "logo_uri" not in r.json  # left out: cleared (RFC 7592 §2.2)
    assert "client_secret" not in r.json  # kept, not rotated
    shown = admin.get(f"/clients/{registered['client_id']}").json
    assert shown["logo_uri"] is None and shown["first_party"] is False

    bad = client.put(uri, json={**replaced, "client_id": other["client_id"]}, headers=_bearer(rat))
    assert bad.status_code == 400 and bad.json["error"] == "invalid_client_metadata"
    bad = client.put(
        uri, json={**replaced, "redirect_uris": ["http://evil.example.com/"]}, headers=_bearer(rat)
    )
    assert bad.status_code == 400 and bad.json["error"] == "invalid_redirect_uri"
    bad = client.put(
        uri, json={**replaced, "token_endpoint_auth_method": "none"}, headers=_bearer(rat)
    )
    assert bad.status_code == 400 and bad.json["error"] == "invalid_client_metadata"

    # The secret still works after the update (authenticated; refresh_token no longer in its
    # grant types, which were replaced by the default).
    r = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "nope"},
        auth=(registered["client_id"], registered["client_secret"]),
    )
    assert r.status_code == 400 and r.json["error"] == "unauthorized_client"

    assert client.delete(uri, headers=_bearer("wrong")).status_code == 401
    r = client.delete(uri, headers=_bearer(rat))
    assert r.status_code == 204
    assert client.get(uri, headers=_bearer(rat)).status_code == 401
    assert admin.get(f"/clients/{registered['client_id']}").status_code == 404
    assert admin.get(f"/clients/{other['client_id']}").status_code == 200


def test_admin_created_clients_have_no_registration_access(client, admin):
    admin.post("/clients", json={"client_id": "spa", **METADATA})
    assert client.get("/oauth/register/spa", headers=_bearer("")).status_code == 401
    assert client.delete("/oauth/register/spa", headers=_bearer("x")).status_code == 401


def test_consent_page_shows_a_registered_clients_metadata(client, admin, browser):
    body = {**METADATA, "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}
    registered = _register(client, _iat(admin), body).json
    params = authorize_params(
        client_id=registered["client_id"], scope="openid email", legal_entity_id="acme"
    )
    page = browser.sign_in(browser.authorize(params))
    html = page.get_data(as_text=True)
    assert Form(html).buttons == ["Allow", "Deny"]  # third party: always asked
    assert "Allow Example Shop?" in html
    assert f'src="{METADATA["logo_uri"]}"' in html
    assert f'href="{METADATA["policy_uri"]}"' in html
    assert f'href="{METADATA["tos_uri"]}"' in html
    assert METADATA["logo_uri"] in page.headers["Content-Security-Policy"]
    allowed = browser.submit(page, decision="allow")
    assert "code" in callback(allowed)
