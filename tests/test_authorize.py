"""The authorization endpoint, its hosted pages and the code exchange, on both backends."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest
from conftest import basic_auth
from frontdoor import REDIRECT_URI, Browser, Form, authorize_params, callback, register, text

from token_service.clients import forget_client
from token_service.extensions import db
from token_service.maintenance import prune
from token_service.models import AuditEvent, AuthorizationCode, BrowserSession, utcnow
from token_service.services.clients import create_client


def exchange(client, params, code, **extra):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": params["client_id"],
        "code_verifier": params["_verifier"],
        **extra,
    }
    return client.post("/oauth/token", data=data)


def sign_in_to_callback(browser, params, entity="acme"):
    page = browser.authorize(params)
    assert page.status_code == 200
    picker = browser.sign_in(page)
    assert picker.status_code == 200, text(picker)
    return callback(browser.submit(picker, legal_entity_id=entity))


def test_login_page_is_labelled_and_protected(shop, browser):
    page = browser.authorize(authorize_params())
    assert page.status_code == 200
    form = Form(page.get_data(as_text=True))
    assert form.labels == ["Email", "Password"]
    assert form.buttons == ["Sign in"]
    assert form.fields["csrf_token"]
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.get_data(as_text=True)
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" in cookie and "__Host-" in cookie  # http only on a loopback issuer


def test_code_flow_picker_id_token_and_switch(shop, browser, client, storefront):
    params = authorize_params()
    page = browser.authorize(params)
    picker = browser.sign_in(page)
    form = Form(picker.get_data(as_text=True))
    assert form.buttons == ["Continue"]
    assert form.labels == ["ACME Corp", "Globex"]  # her own entities only, by name
    assert form.fields["legal_entity_id"] == "acme"  # her default is preselected
    answer = callback(browser.submit(picker, legal_entity_id="globex"))
    assert answer["state"] == params["state"]
    assert answer["iss"] == "http://issuer.test"
    tokens = exchange(client, params, answer["code"])
    assert tokens.status_code == 200, tokens.json
    body = tokens.json
    assert body["legal_entity_id"] == "globex"
    assert "order.order_read_le" not in body["scope"].split()  # a CONTACT at Globex
    claims = shop.extensions["keyring"].decode(body["access_token"])
    assert claims["legal_entity_id"] == "globex"

    id_token = body["id_token"]
    assert shop.extensions["keyring"].decode(id_token) is None  # typ JWT: never an access token
    jwks = jwt.PyJWKSet.from_json(client.get("/jwks.json").get_data(as_text=True))
    header = jwt.get_unverified_header(id_token)
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    id_claims = jwt.decode(
        id_token, key, algorithms=[header["alg"]], audience="web-shop", issuer="http://issuer.test"
    )
    assert header["typ"] == "JWT"
    assert id_claims["nonce"] == params["nonce"]
    assert id_claims["sid"] == claims["sid"]
    assert id_claims["legal_entity_id"] == "globex"
    assert id_claims["email"] == "alice@acme.test" and id_claims["email_verified"] is False
    assert id_claims["name"] == "alice@acme.test"
    assert {"auth_time", "exp", "iat", "at_hash"} <= id_claims.keys()

    # Switching company later is the existing refresh.
    switched = storefront.refresh(
        body["refresh_token"], client_id="web-shop", legal_entity_id="acme"
    )
    assert switched.status_code == 200, switched.json
    assert "order.order_read_le" in switched.json["scope"].split()

    info = client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {switched.json['access_token']}"}
    )
    assert info.status_code == 200, info.json
    assert info.json["sub"] == claims["sub"] and info.json["legal_entity_id"] == "acme"
    assert info.json["email"] == "alice@acme.test"


def test_legal_entity_id_skips_picker_and_single_entity_never_sees_it(shop, browser, client):
    params = authorize_params(legal_entity_id="globex")
    answer = callback(browser.sign_in(browser.authorize(params)))
    assert exchange(client, params, answer["code"]).json["legal_entity_id"] == "globex"
    other = Browser(shop.test_client())
    params = authorize_params()
    answer = callback(other.sign_in(other.authorize(params), email="bob@acme.test"))
    assert exchange(shop.test_client(), params, answer["code"]).json["legal_entity_id"] == "acme"


def test_code_is_single_use_and_replay_revokes(shop, browser, client, introspect):
    params = authorize_params()
    answer = sign_in_to_callback(browser, params)
    first = exchange(client, params, answer["code"])
    assert first.status_code == 200
    replay = exchange(client, params, answer["code"])
    assert replay.status_code == 400 and replay.json["error"] == "invalid_grant"
    assert introspect(first.json["access_token"]) == {"active": False}
    refreshed = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json["refresh_token"],
            "client_id": "web-shop",
        },
    )
    assert refreshed.json["error"] == "invalid_grant"
    with shop.app_context():
        stored = db.session.scalars(db.select(AuthorizationCode)).all()
        assert all(row.code_hash != answer["code"] for row in stored)  # hashed, never the code
        actions = set(db.session.scalars(db.select(AuditEvent.action)))
    assert "authorization_code.replayed" in actions


@pytest.mark.parametrize(
    "change",
    [
        {"code_verifier": "x" * 43},
        {"redirect_uri": "http://127.0.0.1:9999/other"},
        {"client_id": "storefront"},
    ],
)
def test_code_bound_to_verifier_redirect_and_client(shop, browser, client, change):
    params = authorize_params()
    answer = sign_in_to_callback(browser, params)
    refused = exchange(client, params, answer["code"], **change)
    assert refused.status_code in (400, 401)
    assert refused.json["error"] in ("invalid_grant", "unauthorized_client")


@pytest.mark.parametrize(
    "change, error",
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid admin.manage"}, "invalid_scope"),
        ({"prompt": "none login"}, "invalid_request"),
    ],
)
def test_bad_requests_redirect_with_error(shop, browser, change, error):
    params = {k: v for k, v in {**authorize_params(), **change}.items() if v is not None}
    answer = callback(browser.authorize(params))
    assert answer["error"] == error
    assert answer["state"] == params["state"] and answer["iss"] == "http://issuer.test"


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "nobody"},
        {"redirect_uri": "https://evil.test/callback"},
        {"redirect_uri": REDIRECT_URI + "/"},
        {"redirect_uri": None},
    ],
)
def test_unknown_client_or_redirect_is_a_page_never_a_redirect(shop, browser, change):
    params = {k: v for k, v in {**authorize_params(), **change}.items() if v is not None}
    page = browser.authorize(params)
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert page.headers["X-Frame-Options"] == "DENY"


def test_prompt_none_sso_and_prompt_login(shop, browser, client):
    answer = callback(browser.authorize(authorize_params(prompt="none")))
    assert answer["error"] == "login_required"
    sign_in_to_callback(browser, authorize_params())
    # A second client's request reuses the browser session: no page at all.
    register(shop, "second-shop")
    params = authorize_params(client_id="second-shop", prompt="none")
    answer = callback(browser.authorize(params))
    assert "code" in answer
    assert exchange(client, params, answer["code"]).status_code == 200
    page = browser.authorize(authorize_params(prompt="login"))
    assert Form(page.get_data(as_text=True)).buttons == ["Sign in"]
    page = browser.authorize(authorize_params(max_age="0"))
    assert Form(page.get_data(as_text=True)).buttons == ["Sign in"]


def test_wrong_password_is_enumeration_safe_and_throttled(shop, browser):
    page = browser.authorize(authorize_params(login_hint="alice@acme.test"))
    assert Form(page.get_data(as_text=True)).fields["email"] == "alice@acme.test"
    wrong = browser.sign_in(page, password="nope")
    unknown = browser.sign_in(page, email="nobody@acme.test", password="nope")
    assert wrong.status_code == unknown.status_code == 401
    assert "Invalid email or password." in text(wrong) and "Invalid email or password." in text(
        unknown
    )
    free = shop.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free):
        last = browser.sign_in(page, password="nope")
    assert last.status_code == 429 or browser.sign_in(page, password="nope").status_code == 429


def test_forged_csrf_is_refused(shop, browser):
    page = browser.authorize(authorize_params())
    forged = browser.submit(page, email="alice@acme.test", password="x", csrf_token="forged")
    assert forged.status_code == 400
    assert "Location" not in forged.headers


def test_third_party_consent_remembered_and_deny(shop, browser, client):
    register(shop, "partner", first_party=False)
    params = authorize_params(client_id="partner", legal_entity_id="acme")
    consent = browser.sign_in(browser.authorize(params))
    form = Form(consent.get_data(as_text=True))
    assert form.buttons == ["Allow", "Deny"]
    assert "See your email address" in text(consent)
    denied = callback(browser.submit(consent, decision="deny"))
    assert denied["error"] == "access_denied"
    consent = browser.authorize(params)
    answer = callback(browser.submit(consent, decision="allow"))
    assert exchange(client, params, answer["code"]).status_code == 200
    again = authorize_params(client_id="partner", legal_entity_id="acme")
    assert "code" in callback(browser.authorize(again))  # remembered for this scope set
    bigger = authorize_params(client_id="partner", legal_entity_id="acme", scope="openid")
    assert browser.authorize(bigger).status_code == 200  # another scope set: asked again


def test_logout_ends_session_and_revokes_families(shop, browser, client, introspect):
    params = authorize_params()
    answer = sign_in_to_callback(browser, params)
    tokens = exchange(client, params, answer["code"]).json
    bye = client.get(
        "/oauth/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "http://127.0.0.1:9999/bye",
            "state": "s1",
        },
    )
    assert bye.status_code == 303
    assert bye.headers["Location"] == "http://127.0.0.1:9999/bye?state=s1"
    assert introspect(tokens["access_token"]) == {"active": False}
    answer = callback(browser.authorize(authorize_params(prompt="none")))
    assert answer["error"] == "login_required"
    evil = client.get(
        "/oauth/logout",
        query_string={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://evil.test/",
        },
    )
    assert evil.status_code == 400 and "Location" not in evil.headers


def test_admin_registers_redirect_uris(app, client):
    headers = basic_auth("admin-cli", app.secrets["admin-cli"])
    token = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=headers
    ).json["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    body = {
        "client_id": "spa",
        "confidential": False,
        "grant_types": ["authorization_code"],
        "scope": "openid",
        "redirect_uris": ["https://shop.test/cb"],
        "post_logout_redirect_uris": ["https://shop.test/"],
    }
    created = client.post("/admin/clients", json=body, headers=auth)
    assert created.status_code == 201, created.json
    assert created.json["redirect_uris"] == ["https://shop.test/cb"]
    bad = client.post(
        "/admin/clients",
        headers=auth,
        json={**body, "client_id": "spa2", "redirect_uris": ["http://shop.test/cb"]},
    )
    assert bad.status_code == 422
    none = client.post(
        "/admin/clients", headers=auth, json={**body, "client_id": "spa3", "redirect_uris": []}
    )
    assert none.status_code == 422


def test_discovery_is_openid(client):
    meta = client.get("/.well-known/openid-configuration").json
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["authorization_endpoint"] == "http://issuer.test/oauth/authorize"
    assert meta["userinfo_endpoint"] == "http://issuer.test/oauth/userinfo"
    assert meta["end_session_endpoint"] == "http://issuer.test/oauth/logout"
    assert "openid" in meta["scopes_supported"]


def test_prompt_select_account_shows_the_picker_again(shop, browser, client):
    sign_in_to_callback(browser, authorize_params())
    params = authorize_params(prompt="select_account", legal_entity_id="acme")
    picker = browser.authorize(params)
    form = Form(picker.get_data(as_text=True))
    assert form.buttons == ["Continue"] and form.fields["legal_entity_id"] == "acme"
    answer = callback(browser.submit(picker, legal_entity_id="globex"))
    assert exchange(client, params, answer["code"]).json["legal_entity_id"] == "globex"


def test_prune_forgets_dead_codes_and_browser_sessions(shop, browser, client):
    params = authorize_params()
    answer = sign_in_to_callback(browser, params)
    tokens = exchange(client, params, answer["code"]).json
    unused = callback(browser.authorize(authorize_params(legal_entity_id="acme")))
    assert "code" in unused
    with shop.app_context():
        past = utcnow() - timedelta(hours=1)
        db.session.execute(db.update(AuthorizationCode).values(expires_at=past))
        db.session.commit()
        result = prune(keep_dead_for=timedelta(0))
        assert result.codes == 1  # the unused one; the other's session lives
        assert db.session.scalar(db.select(db.func.count()).select_from(AuthorizationCode)) == 1
    client.get("/oauth/logout", query_string={"id_token_hint": tokens["id_token"]})
    with shop.app_context():
        db.session.execute(db.update(BrowserSession).values(ended_at=utcnow() - timedelta(1)))
        db.session.commit()
        result = prune(keep_dead_for=timedelta(0))
        assert result.sessions == 1 and result.codes == 1 and result.browser_sessions == 1


def test_userinfo_needs_a_live_token(shop, browser, client, storefront):
    assert client.get("/oauth/userinfo").status_code == 401
    bogus = client.get("/oauth/userinfo", headers={"Authorization": "Bearer a.b.c"})
    assert bogus.status_code == 401
    assert bogus.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    # A password-grant session without openid has no UserInfo.
    token = storefront.login().json["access_token"]
    plain = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert plain.status_code == 403


def test_a_third_party_learns_the_customers_companies_only_if_consented(shop, browser, client):
    with shop.app_context():
        create_client(
            "partner",
            name="Partner",
            confidential=False,
            grant_types=["authorization_code", "refresh_token"],
            scope="openid offline_access order.order_read_le "
            "customermanagement.legalentity_read_own",
            first_party=False,
            redirect_uris=[REDIRECT_URI],
        )
        db.session.commit()
        forget_client()
    for scope, released in (
        ("openid offline_access order.order_read_le", False),
        ("openid offline_access customermanagement.legalentity_read_own", True),
    ):
        params = authorize_params(client_id="partner", legal_entity_id="acme", scope=scope)
        page = browser.authorize(params)
        if Form(page.get_data(as_text=True)).buttons == ["Sign in"]:
            page = browser.sign_in(page)
        answer = callback(browser.submit(page, decision="allow"))
        tokens = exchange(client, params, answer["code"]).json
        assert tokens["legal_entity_id"] == "acme"
        assert ("legal_entities" in tokens) is released, tokens
        refreshed = client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": "partner",
            },
        ).json
        assert ("legal_entities" in refreshed) is released
    # First-party clients are the customer's own storefront: always told.
    first = authorize_params(legal_entity_id="acme")
    tokens = exchange(client, first, callback(browser.authorize(first))["code"]).json
    assert [e["id"] for e in tokens["legal_entities"]] == ["acme", "globex"]
