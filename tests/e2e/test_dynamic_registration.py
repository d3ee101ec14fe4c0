"""Dynamic client registration as a third party meets it, against the served service (both
backends): an admin's initial access token; RFC 7591 registration with its metadata and
`offline_access`; then Authlib's OAuth 2 client through the code flow with PKCE (the hosted
sign-in, picker and consent followed as a browser would, with `requests`), the ID token checked
with joserfc, a refresh with a company switch whose new ID token names the new company, and
RFC 7592 read, update and delete with the registration access token."""

from __future__ import annotations

import requests
from authlib.integrations.requests_client import OAuth2Session
from frontdoor import Form
from joserfc import jwt
from joserfc.jwk import KeySet

from token_service.demo import DEMO_PASSWORD

from .test_oidc_client_ts import admin_token

REDIRECT_URI = "https://partner.example/callback"


def follow(browser: requests.Session, response: requests.Response, **fields) -> requests.Response:
    """Submit the first form of a hosted page, the way a browser posts it."""
    form = Form(response.text)
    assert form.action, response.text[:400]
    action = requests.compat.urljoin(response.url, form.action)
    return browser.post(action, data={**form.fields, **fields}, allow_redirects=False)


def verify_id_token(issuer: str, token: str, client_id: str, nonce: str | None) -> dict:
    keys = KeySet.import_key_set(requests.get(f"{issuer}/jwks.json", timeout=10).json())
    claims = jwt.decode(token, keys).claims
    expected = {"iss": {"essential": True, "value": issuer}, "sub": {"essential": True}}
    expected["aud"] = {"essential": True, "value": client_id}
    jwt.JWTClaimsRegistry(**expected, exp={"essential": True}).validate(claims)
    if nonce is not None:
        assert claims["nonce"] == nonce
    return claims


def test_a_dynamically_registered_client_signs_a_buyer_in_and_manages_itself(server):
    issuer = server.issuer
    meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    assert meta["registration_endpoint"] == f"{issuer}/oauth/register"
    assert "offline_access" in meta["scopes_supported"]

    # Closed without an initial access token.
    closed = requests.post(meta["registration_endpoint"], json={"redirect_uris": [REDIRECT_URI]})
    assert closed.status_code == 401, closed.text

    granted = requests.post(
        f"{issuer}/admin/initial-access-tokens",
        json={"expires_in": 600, "uses": 1},
        headers={"Authorization": f"Bearer {admin_token(server)}"},
        timeout=10,
    )
    assert granted.status_code == 201, granted.text
    initial = granted.json()["token"]
    metadata = {
        "client_name": "Partner Procurement",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "openid email offline_access order.order_read_le",
        "client_uri": "https://partner.example",
        "policy_uri": "https://partner.example/privacy",
        "tos_uri": "https://partner.example/terms",
        "contacts": ["it@partner.example"],
    }
    registered = requests.post(
        meta["registration_endpoint"],
        json=metadata,
        headers={"Authorization": f"Bearer {initial}"},
        timeout=10,
    )
    assert registered.status_code == 201, registered.text
    client = registered.json()
    for name, value in metadata.items():
        if name == "scope":  # a set of names (RFC 6749 §3.3): any order
            assert set(client[name].split()) == set(value.split())
        else:
            assert client[name] == value, name
    assert client["client_secret_expires_at"] == 0 and client["client_id_issued_at"] > 0
    # The initial access token was for one registration.
    again = requests.post(
        meta["registration_endpoint"], json=metadata, headers={"Authorization": f"Bearer {initial}"}
    )
    assert again.status_code == 401

    # The code flow with PKCE, by Authlib, signed in through the hosted pages.
    oauth = OAuth2Session(
        client["client_id"],
        client["client_secret"],
        scope="openid email offline_access order.order_read_le",
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = "v" * 64
    url, _state = oauth.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce="n-partner"
    )
    browser = requests.Session()
    page = browser.get(url, allow_redirects=False)
    assert page.status_code == 200 and "password" in Form(page.text).fields
    page = follow(browser, page, email="alice@acme.test", password=DEMO_PASSWORD)
    while page.status_code in (302, 303) and not page.headers["Location"].startswith(REDIRECT_URI):
        page = browser.get(requests.compat.urljoin(page.url, page.headers["Location"]))
    assert "Partner Procurement" in page.text  # the picker or the consent page names the client
    if "legal_entity_id" in Form(page.text).fields or Form(page.text).radios:
        page = follow(browser, page, legal_entity_id="acme")
        while page.status_code in (302, 303) and not page.headers["Location"].startswith(
            REDIRECT_URI
        ):
            page = browser.get(requests.compat.urljoin(page.url, page.headers["Location"]))
    assert "https://partner.example/privacy" in page.text  # consent: the client's policy
    back = follow(browser, page, decision="allow")
    assert back.status_code in (302, 303) and back.headers["Location"].startswith(REDIRECT_URI)
    token = oauth.fetch_token(
        meta["token_endpoint"],
        authorization_response=back.headers["Location"],
        code_verifier=verifier,
    )
    # openid and offline_access act through the session, not as the access token's scopes.
    assert "order.order_read_le" in token["scope"].split()
    assert token["refresh_token"], "offline_access consented: a refresh token"
    claims = verify_id_token(issuer, token["id_token"], client["client_id"], "n-partner")
    assert claims["legal_entity_id"] == "acme"

    # A refresh that switches company: a new ID token (OpenID Connect Core §12.2) names it.
    switched = oauth.refresh_token(
        meta["token_endpoint"], refresh_token=token["refresh_token"], legal_entity_id="globex"
    )
    refreshed = verify_id_token(issuer, switched["id_token"], client["client_id"], None)
    assert refreshed["legal_entity_id"] == "globex"
    for name in ("sub", "sid", "auth_time", "aud", "azp"):
        assert refreshed.get(name) == claims.get(name), name
    assert "nonce" not in refreshed

    # RFC 7592: read, update, delete with the registration access token.
    manage = {"Authorization": f"Bearer {client['registration_access_token']}"}
    read = requests.get(client["registration_client_uri"], headers=manage, timeout=10)
    assert read.status_code == 200 and read.json()["client_name"] == "Partner Procurement"
    assert (
        "client_secret" not in read.json()
        or read.json()["client_secret"] == client["client_secret"]
    )
    update = {**metadata, "client_id": client["client_id"], "client_name": "Partner Buying"}
    updated = requests.put(client["registration_client_uri"], json=update, headers=manage)
    assert updated.status_code == 200 and updated.json()["client_name"] == "Partner Buying"
    gone = requests.delete(client["registration_client_uri"], headers=manage, timeout=10)
    assert gone.status_code == 204
    refused = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": switched["refresh_token"]},
        auth=(client["client_id"], client["client_secret"]),
        timeout=10,
    )
    # invalid_client where the worker has forgotten the client; invalid_grant where it still
    # knows it (a worker keeps a client's row up to 5 s): its sessions went with it either way.
    assert (refused.status_code, refused.json()["error"]) in (
        (401, "invalid_client"),
        (400, "invalid_grant"),
    )
