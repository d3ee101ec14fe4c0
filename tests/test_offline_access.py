"""Issue 27, items 3 and 4: `offline_access` (OpenID Connect Core §11) decides whether a
third-party client gets a refresh token from the code grant, and a refresh of a session whose
ceiling holds `openid` answers an ID token (Core §12.2), on both backends."""

from __future__ import annotations

import time

import jwt
import pytest
from authlib.oidc.core.util import create_half_hash
from conftest import basic_auth, claims_of
from frontdoor import REDIRECT_URI, Form, authorize_params, callback, register, text

from token_service.clients import forget_client
from token_service.extensions import db
from token_service.keys import SigningKey
from token_service.models import Scope
from token_service.services.clients import create_client

PARTNER = "partner"
STAY_SIGNED_IN = "Stay signed in: keep access when you are away"


def exchange(client, params, code):
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": params["client_id"],
            "code_verifier": params["_verifier"],
        },
    )


def refresh(client, refresh_token, client_id, **params):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    return client.post("/oauth/token", data={**data, **params})


def partner(app, scope="openid email offline_access order.order_read_le"):
    """A third-party code-flow client (consent asked) whose ceiling is `scope`."""
    with app.app_context():
        create_client(
            PARTNER,
            name="Partner app",
            confidential=False,
            grant_types=["authorization_code", "refresh_token"],
            scope=scope,
            first_party=False,
            redirect_uris=[REDIRECT_URI],
        )
        db.session.commit()
        forget_client()


def consented(browser, client, scope, **extra):
    """Bob through the hosted pages for the partner: sign-in, consent (Allow), the exchange.
    Returns the consent page and the token response."""
    params = authorize_params(client_id=PARTNER, scope=scope, **extra)
    page = browser.authorize(params)
    if Form(page.get_data(as_text=True)).buttons == ["Sign in"]:
        page = browser.sign_in(page, email="bob@acme.test")
    assert Form(page.get_data(as_text=True)).buttons == ["Allow", "Deny"], text(page)
    answer = callback(browser.submit(page, decision="allow"))
    tokens = exchange(client, params, answer["code"])
    assert tokens.status_code == 200, tokens.json
    return page, tokens.json


def verified_id_token(app, client, id_token, audience):
    jwks = jwt.PyJWKSet.from_json(client.get("/jwks.json").get_data(as_text=True))
    header = jwt.get_unverified_header(id_token)
    assert header["typ"] == "JWT"
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    issuer = app.config["SETTINGS"].issuer
    return jwt.decode(id_token, key, algorithms=[header["alg"]], audience=audience, issuer=issuer)


# -- offline_access ---------------------------------------------------------------------------


def test_offline_access_is_a_predefined_scope_clients_may_hold(app, client):
    with app.app_context():
        scope = db.session.get(Scope, "offline_access")
        assert scope is not None and scope.predefined
        assert scope.description == STAY_SIGNED_IN
    meta = client.get("/.well-known/openid-configuration").json
    assert "offline_access" in meta["scopes_supported"]
    # A client's ceiling may name it: registration accepts it.
    token = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth("admin-cli", app.secrets["admin-cli"]),
    ).json["access_token"]
    r = client.post(
        "/admin/clients",
        json={
            "client_id": PARTNER,
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid offline_access order.order_read_le",
            "redirect_uris": [REDIRECT_URI],
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.json
    assert "offline_access" in r.json["scope"].split()


def test_third_party_gets_a_refresh_token_only_with_offline_access(app, browser, client):
    partner(app)
    page, tokens = consented(browser, client, "openid email order.order_read_le")
    assert STAY_SIGNED_IN not in text(page)
    assert "refresh_token" not in tokens and "refresh_token_expires_in" not in tokens
    # The access token works for what it is: UserInfo answers while it lives.
    info = client.get(
        "/oauth/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 200 and info.json["sub"] == "cus_bob"
    assert "id_token" in tokens

    page, tokens = consented(browser, client, "openid email offline_access order.order_read_le")
    assert STAY_SIGNED_IN in text(page)
    assert tokens["refresh_token"] and tokens["refresh_token_expires_in"] > 0
    # Like openid, offline_access acts through the ceiling: no access token carries it.
    assert "offline_access" not in tokens["scope"].split()
    assert "offline_access" not in claims_of(tokens["access_token"])["scope"].split()
    again = refresh(client, tokens["refresh_token"], PARTNER)
    assert again.status_code == 200, again.json
    assert "offline_access" not in again.json["scope"].split()
    assert again.json["refresh_token"]


def test_remembered_consent_with_offline_access_needs_no_prompt_consent(app, browser, client):
    """Core §11 asks for prompt=consent "unless other conditions for processing the request
    permitting offline access ... are in place": consent remembered for this very scope set,
    offline_access included, is such a condition; prompt=consent asks again."""
    partner(app)
    scope = "openid offline_access order.order_read_le"
    consented(browser, client, scope)
    for extra in ({}, {"prompt": "none"}):
        params = authorize_params(client_id=PARTNER, scope=scope, **extra)
        answer = callback(browser.authorize(params))
        tokens = exchange(client, params, answer["code"]).json
        assert tokens["refresh_token"]
    page = browser.authorize(authorize_params(client_id=PARTNER, scope=scope, prompt="consent"))
    assert STAY_SIGNED_IN in text(page)
    # Consent without offline_access does not cover it: asked, and prompt=none is refused.
    consented(browser, client, "openid order.order_read_le")
    bigger = authorize_params(
        client_id=PARTNER, scope="openid email offline_access order.order_read_le", prompt="none"
    )
    assert callback(browser.authorize(bigger))["error"] == "consent_required"


def test_first_party_clients_always_get_a_refresh_token(shop, browser, client, storefront):
    params = authorize_params(legal_entity_id="acme", scope="openid order.order_read_le")
    answer = callback(browser.sign_in(browser.authorize(params)))
    tokens = exchange(client, params, answer["code"]).json
    assert tokens["refresh_token"]
    assert storefront.login().json["refresh_token"]  # the password grant: first party only


# -- the ID token of a refresh ----------------------------------------------------------------


def test_refresh_answers_an_id_token_of_the_same_authentication(shop, browser, client):
    params = authorize_params(legal_entity_id="globex")
    answer = callback(browser.sign_in(browser.authorize(params)))
    tokens = exchange(client, params, answer["code"]).json
    first = verified_id_token(shop, client, tokens["id_token"], "web-shop")
    assert first["nonce"] == params["nonce"] and first["legal_entity_id"] == "globex"
    time.sleep(1.05)  # a new iat

    switched = refresh(client, tokens["refresh_token"], "web-shop", legal_entity_id="acme")
    assert switched.status_code == 200, switched.json
    body = switched.json
    claims = verified_id_token(shop, client, body["id_token"], "web-shop")
    for same in ("iss", "sub", "aud", "azp", "auth_time", "sid", "email", "email_verified"):
        assert claims[same] == first[same], same
    assert claims["iat"] > first["iat"]
    assert claims["exp"] - claims["iat"] == first["exp"] - first["iat"]
    assert claims["legal_entity_id"] == "acme"  # the company switched to
    assert "nonce" not in claims  # Core §12.2: a nonce, if any, only the original's
    alg = jwt.get_unverified_header(body["id_token"])["alg"]
    assert claims["at_hash"] == create_half_hash(body["access_token"], alg).decode()
    assert claims["sid"] == claims_of(body["access_token"])["sid"]

    # A `scope` narrows the access token only: the ID token is the session's, as before.
    narrowed = refresh(client, body["refresh_token"], "web-shop", scope="order.order_read_le")
    assert narrowed.status_code == 200, narrowed.json
    claims = verified_id_token(shop, client, narrowed.json["id_token"], "web-shop")
    assert claims["sid"] == first["sid"] and claims["email"] == "alice@acme.test"


def test_the_grace_replay_answers_the_same_id_token(shop, browser, client):
    params = authorize_params(legal_entity_id="acme")
    answer = callback(browser.sign_in(browser.authorize(params)))
    tokens = exchange(client, params, answer["code"]).json
    first = refresh(client, tokens["refresh_token"], "web-shop", legal_entity_id="globex")
    again = refresh(client, tokens["refresh_token"], "web-shop", legal_entity_id="globex")
    assert again.status_code == 200
    assert again.json == first.json and again.json["id_token"]


@pytest.fixture
def cost(app, monkeypatch):
    """What a refresh costs: signatures made and the session store's calls."""
    counted = {"signed": 0, "calls": []}
    encode = SigningKey.encode_jwt

    def signing(self, claims, typ="at+jwt"):
        counted["signed"] += 1
        return encode(self, claims, typ)

    monkeypatch.setattr(SigningKey, "encode_jwt", signing)
    sessions = app.extensions["token_endpoint"].sessions
    for name in ("load_refresh", "rotate", "load_customer", "find_login", "session_state"):
        method = getattr(sessions, name)

        def counting(*args, _name=name, _method=method, **kwargs):
            counted["calls"].append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(sessions, name, counting)
    return counted


def test_a_refresh_without_openid_costs_nothing_more(app, storefront, cost):
    """The password grant's sessions (and the Emporix layer's, which are the same): one
    signature and one read and one write of the session store per refresh, as before."""
    login = storefront.login()
    cost["signed"], cost["calls"] = 0, []
    switched = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert switched.status_code == 200
    assert "id_token" not in switched.json
    assert cost == {"signed": 1, "calls": ["load_refresh", "rotate"]}


def test_a_refresh_with_openid_costs_one_signature_and_the_email(app, browser, client, cost):
    """With `openid`: one more signature; the email is read only when the ceiling releases it
    (email, profile)."""
    for scope, calls in (
        ("openid order.order_read_le", ["load_refresh", "rotate"]),
        ("openid email order.order_read_le", ["load_refresh", "load_customer", "rotate"]),
    ):
        client_id = f"shop-{len(calls)}"
        register(app, client_id)
        params = authorize_params(client_id=client_id, scope=scope, legal_entity_id="acme")
        page = browser.authorize(params)
        if Form(page.get_data(as_text=True)).buttons == ["Sign in"]:
            page = browser.sign_in(page)
        tokens = exchange(client, params, callback(page)["code"]).json
        cost["signed"], cost["calls"] = 0, []
        r = refresh(client, tokens["refresh_token"], client_id, legal_entity_id="globex")
        assert r.status_code == 200 and r.json["id_token"]
        assert cost == {"signed": 2, "calls": calls}, scope


def test_a_refresh_of_a_customer_deleted_meanwhile_is_refused(app, browser, client, monkeypatch):
    register(app)
    params = authorize_params(legal_entity_id="acme")
    tokens = exchange(client, params, callback(browser.sign_in(browser.authorize(params)))["code"])
    sessions = app.extensions["token_endpoint"].sessions
    monkeypatch.setattr(sessions, "load_customer", lambda customer_id: None)
    r = refresh(client, tokens.json["refresh_token"], "web-shop")
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
    monkeypatch.undo()
    # Nothing was consumed: the token still refreshes.
    assert refresh(client, tokens.json["refresh_token"], "web-shop").status_code == 200
