"""The front door in a real browser: Debian's chromium driven by Playwright, against the service
under `token-service serve` (embedded backend, as `make run` serves it). The client side is
libraries this project did not write: authlib's OAuth2 client makes the PKCE request and exchanges
the code, PyJWT verifies the id_token against the JWKS. One server and one browser for the module;
each test has its own browser context (its own cookies).

Also writes docs/login.png and docs/picker.png, the README's screenshots."""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from token_service.demo import DEMO_PASSWORD

from .conftest import REPO, Server, running_server


# The client's pages are elsewhere (another origin): a stand-in server that answers anything,
# so the code reaches no server but the client's.
class _ClientPage(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"client page"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


_client_site = ThreadingHTTPServer(("127.0.0.1", 0), _ClientPage)
threading.Thread(target=_client_site.serve_forever, daemon=True).start()
CLIENT_SITE = f"http://127.0.0.1:{_client_site.server_address[1]}"
CALLBACK = f"{CLIENT_SITE}/callback"
AFTER_LOGOUT = f"{CLIENT_SITE}/signed-out"
CLIENT_ID = "browser-shop"
SCOPE = "openid email profile order.order_read_le customer.customerprofile_view"
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Server:
    home = tmp_path_factory.mktemp("browser")
    with running_server("embedded", home, f"sqlite:///{home / 'ts.sqlite3'}") as server:
        register_client(server)
        yield server


def register_client(server: Server) -> None:
    """A storefront registered as an operator would: through the admin API."""
    token = requests.post(
        f"{server.issuer}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("admin-cli", server.secrets["admin-cli"]),
        timeout=10,
    ).json()["access_token"]
    created = requests.post(
        f"{server.issuer}/admin/clients",
        json={
            "client_id": CLIENT_ID,
            "name": "Browser shop",
            "confidential": False,
            "first_party": True,
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": SCOPE,
            "redirect_uris": [CALLBACK],
            "post_logout_redirect_uris": [AFTER_LOGOUT],
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text


@pytest.fixture(scope="module")
def metadata(web) -> dict:
    return requests.get(f"{web.issuer}/.well-known/openid-configuration", timeout=10).json()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 720, "height": 640})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def oauth_session() -> OAuth2Session:
    return OAuth2Session(
        CLIENT_ID, redirect_uri=CALLBACK, scope=SCOPE, code_challenge_method="S256"
    )


def start(metadata: dict, **extra) -> tuple[OAuth2Session, str, str, str]:
    """authlib builds the request (PKCE S256, state); returns session, URL, verifier, nonce."""
    session = oauth_session()
    verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(12)
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **extra
    )
    session.expected_state = state
    return session, url, verifier, nonce


def sign_in(page, email="alice@acme.test", password=DEMO_PASSWORD) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def callback_query(page) -> dict:
    page.wait_for_url(f"{CALLBACK}*")
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def verify_id_token(metadata: dict, id_token: str) -> dict:
    key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(id_token)
    return jwt.decode(
        id_token,
        key.key,
        algorithms=metadata["id_token_signing_alg_values_supported"],
        audience=CLIENT_ID,
        issuer=metadata["issuer"],
        options={"require": ["exp", "iat", "sub", "aud", "iss", "auth_time", "nonce", "sid"]},
    )


def code_flow(page, metadata, entity="globex") -> tuple[dict, dict, OAuth2Session, str]:
    session, url, verifier, nonce = start(metadata)
    page.goto(url)
    sign_in(page)
    page.get_by_label(entity_name(entity)).check()
    page.get_by_role("button", name="Continue").click()
    answer = callback_query(page)
    tokens = session.fetch_token(
        metadata["token_endpoint"], authorization_response=page.url, code_verifier=verifier
    )
    claims = verify_id_token(metadata, tokens["id_token"])
    assert claims["nonce"] == nonce
    return tokens, claims, session, answer["code"]


def entity_name(entity: str) -> str:
    return {"acme": "ACME Corp", "globex": "Globex"}[entity]


def test_sign_in_picker_code_exchange_and_id_token(web, metadata, page):
    session, url, verifier, nonce = start(metadata)
    page.goto(url)
    assert page.get_by_role("button", name="Sign in").is_visible()
    page.screenshot(path=str(DOCS / "login.png"))
    sign_in(page)
    page.get_by_role("button", name="Continue").wait_for()
    assert page.get_by_label("ACME Corp").is_checked()  # her default, preselected
    page.screenshot(path=str(DOCS / "picker.png"))
    page.get_by_label("Globex").check()
    page.get_by_role("button", name="Continue").click()
    answer = callback_query(page)
    assert answer["iss"] == web.issuer  # RFC 9207
    assert answer["state"] == session.expected_state

    tokens = session.fetch_token(
        metadata["token_endpoint"],
        authorization_response=page.url,
        code_verifier=verifier,
        state=session.expected_state,
    )
    claims = verify_id_token(metadata, tokens["id_token"])
    assert claims["nonce"] == nonce
    assert claims["legal_entity_id"] == tokens["legal_entity_id"] == "globex"
    assert claims["email"] == "alice@acme.test"
    assert "order.order_read_le" not in tokens["scope"].split()  # a contact at Globex

    # The company switch is the existing refresh, no new login.
    switched = session.refresh_token(
        metadata["token_endpoint"], refresh_token=tokens["refresh_token"], legal_entity_id="acme"
    )
    assert switched["legal_entity_id"] == "acme"
    assert "order.order_read_le" in switched["scope"].split()
    info = requests.get(
        metadata["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {switched['access_token']}"},
        timeout=10,
    ).json()
    assert info["sub"] == claims["sub"] and info["legal_entity_id"] == "acme"

    # The same code again: refused, and the tokens issued from it are revoked.
    replay = requests.post(
        metadata["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": CALLBACK,
            "client_id": CLIENT_ID,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    live = requests.post(
        metadata["introspection_endpoint"],
        data={"token": switched["access_token"]},
        auth=("order-service", web.secrets["order-service"]),
        timeout=10,
    ).json()
    assert live == {"active": False}

    # Nothing secret in the service's own log.
    log = web.log.read_text()
    for secret in (DEMO_PASSWORD, answer["code"], tokens["refresh_token"], verifier):
        assert secret not in log


def test_wrong_password_then_throttled(web, metadata, page):
    _, url, _, _ = start(metadata)
    page.goto(url)
    sign_in(page, email="mallory@acme.test", password="wrong")
    assert page.get_by_role("alert").inner_text() == "Invalid email or password."
    assert page.get_by_label("Email").input_value() == "mallory@acme.test"
    for _ in range(10):
        sign_in(page, email="mallory@acme.test", password="wrong")
        if "Too many" in page.get_by_role("alert").inner_text():
            break
    assert page.get_by_role("alert").inner_text().startswith("Too many failed sign-ins.")


def test_prompt_none_sso_and_logout(web, metadata, page):
    _, url, _, _ = start(metadata, prompt="none")
    page.goto(url)
    assert callback_query(page)["error"] == "login_required"

    tokens, _, _, _ = code_flow(page, metadata, "acme")
    _, url, _, _ = start(metadata, prompt="none")
    page.goto(url)  # the browser session answers: no page
    assert "code" in callback_query(page)

    state = secrets.token_urlsafe(8)
    query = {
        "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": AFTER_LOGOUT,
        "state": state,
    }
    page.goto(f"{metadata['end_session_endpoint']}?{urlencode(query)}")
    page.wait_for_url(f"{AFTER_LOGOUT}*")
    assert parse_qs(urlsplit(page.url).query)["state"] == [state]
    with pytest.raises(OAuthError):
        oauth_session().refresh_token(
            metadata["token_endpoint"], refresh_token=tokens["refresh_token"]
        )
    _, url, _, _ = start(metadata, prompt="none")
    page.goto(url)
    assert callback_query(page)["error"] == "login_required"


def test_forged_csrf_and_bad_redirect_uri(web, metadata, page):
    _, url, _, _ = start(metadata)
    page.goto(url)
    page.locator("input[name=csrf_token]").evaluate("input => { input.value = 'forged'; }")
    sign_in(page)
    assert page.url.startswith(web.issuer)
    assert "expired or was not sent from this site" in page.content()

    bad = url.replace("redirect_uri=http", "redirect_uri=https")
    response = page.goto(bad)
    assert response.status == 400
    assert page.url.startswith(metadata["authorization_endpoint"])  # an error page, no redirect
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_demo_page_runs_the_flow(web, page):
    """/demo (make run's demo client): sign in, see the tokens, switch company, sign out."""
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{web.issuer}/demo")
    page.get_by_role("button", name="Sign in").click()
    sign_in(page)
    page.get_by_label("ACME Corp").check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{web.issuer}/demo")
    status = page.get_by_role("status")
    status.filter(has_text="acting for ACME Corp").wait_for()
    assert '"legal_entity_id": "acme"' in page.locator("#id-token").inner_text()
    page.get_by_role("button", name="Switch to Globex").click()
    status.filter(has_text="acting for Globex").wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{web.issuer}/demo?state=*")
    page.get_by_role("button", name="Sign in").wait_for()
    assert errors == []
