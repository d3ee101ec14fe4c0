"""oidc-client-ts, the most used browser OIDC library, in a single-page storefront on another
origin (issue 27): Debian's Chromium, driven by Playwright, loads the page from
http://localhost:<port2> (tests/e2e/spa/, with the library's browser bundle from node_modules)
and the page talks to the service at http://127.0.0.1:<port> itself, with no proxy in between:
discovery, the token endpoint, UserInfo and revocation all answer it through CORS.

signinRedirect → the hosted sign-in → the company picker → signinCallback (code exchange, ID
token, UserInfo) → a switch to Globex with `extraTokenParams: {legal_entity_id}` (signinSilent,
which uses the refresh token) → revokeTokens → signoutRedirect. Silent renew goes through the
refresh token: an iframe with prompt=none cannot work (the hosted pages are never framed, and
the browser-session cookie is SameSite=Lax, which a cross-site iframe does not send). One server
and one browser for the module."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from token_service.demo import DEMO_PASSWORD

from .conftest import Server, running_server
from .test_storefront_e2e import NODE_DIR, _node_tools, _npm_ci

SPA_DIR = Path(__file__).parent / "spa"
BUNDLE = NODE_DIR / "node_modules" / "oidc-client-ts" / "dist" / "browser" / "oidc-client-ts.js"
CLIENT_ID = "spa-shop"
SCOPE = "openid email profile order.order_read_le customer.customerprofile_view"


def spa_site(config: dict) -> ThreadingHTTPServer:
    """The storefront's own web server: its page for every *.html path, its script, the
    library's bundle and its configuration. Nothing else: it forwards nothing."""
    files = {
        "/app.js": (SPA_DIR / "app.js").read_bytes(),
        "/oidc-client-ts.js": BUNDLE.read_bytes(),
        "/config.js": f"window.SPA_CONFIG = {json.dumps(config)};".encode(),
    }
    page = (SPA_DIR / "index.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path.endswith(".html") or path == "/":
                body, kind = page, "text/html; charset=utf-8"
            elif path in files:
                body, kind = files[path], "text/javascript; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Server:
    _node_tools()
    _npm_ci(_node_tools()[1])  # the locked oidc-client-ts (node_modules/ is git-ignored)
    home = tmp_path_factory.mktemp("oidc-client-ts")
    with running_server("embedded", home, f"sqlite:///{home / 'ts.sqlite3'}") as server:
        yield server


@pytest.fixture(scope="module")
def spa(web) -> str:
    """The storefront's origin, http://localhost:<port2>: another origin than the issuer's."""
    site = spa_site({"issuer": web.issuer, "clientId": CLIENT_ID, "scope": SCOPE})
    origin = f"http://localhost:{site.server_address[1]}"
    register(web, origin)
    yield origin
    site.shutdown()
    site.server_close()


def admin_token(server: Server) -> str:
    r = requests.post(
        f"{server.issuer}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("admin-cli", server.secrets["admin-cli"]),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def register(server: Server, origin: str) -> None:
    """A public first-party client, as an operator registers one: through the admin API. No
    `allowed_origins`: its redirect URIs' origin is allowed."""
    created = requests.post(
        f"{server.issuer}/admin/clients",
        json={
            "client_id": CLIENT_ID,
            "name": "Single-page storefront",
            "confidential": False,
            "first_party": True,
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": SCOPE,
            "redirect_uris": [f"{origin}/callback.html", f"{origin}/silent.html"],
            "post_logout_redirect_uris": [f"{origin}/signed-out.html"],
        },
        headers={"Authorization": f"Bearer {admin_token(server)}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert created.json()["allowed_origins"] is None


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.console = []
    page.on("console", lambda message: page.console.append(f"{message.type}: {message.text}"))
    yield page
    context.close()


def claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def introspect(server: Server, token: str) -> dict:
    r = requests.post(
        f"{server.issuer}/oauth/introspect",
        data={"token": token},
        auth=("order-service", server.secrets["order-service"]),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def requests_served(server: Server) -> set[tuple[str, str, int]]:
    """(method, route, status) of the requests in the server's log."""
    served = set()
    for line in server.log.read_text(errors="replace").splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("event") == "request":
            served.add((record["method"], record.get("route"), record["status"]))
    return served


def ready(page) -> dict:
    """What the page's load did (window.spaReady), failing with the page's console."""
    result = page.evaluate("spaReady")
    assert result["ok"], (result, page.console)
    return result


def sign_in(page, spa: str) -> dict:
    """signinRedirect from the storefront, the hosted sign-in and picker (ACME, her default),
    then signinCallback on the storefront: returns the user oidc-client-ts holds."""
    page.goto(f"{spa}/")
    page.get_by_role("button", name="Sign in with the shop's account").click()
    page.get_by_label("Email").fill("alice@acme.test")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_label("ACME Corp").is_checked()
    assert page.get_by_label("Globex").is_visible()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(f"{spa}/callback.html*")
    return ready(page)["callback"]


def test_sign_in_switch_revoke_and_sign_out_from_another_origin(web, spa, page):
    user = sign_in(page, spa)
    assert page.url.startswith(spa) and not spa.startswith(web.issuer)  # two origins
    profile = user["profile"]
    assert profile["iss"] == web.issuer and profile["aud"] == CLIENT_ID
    assert profile["legal_entity_id"] == "acme"
    assert profile["email"] == "alice@acme.test"  # the ID token's, and UserInfo's (loadUserInfo)
    assert claims(user["access_token"])["legal_entity_id"] == "acme"
    assert user["refresh_token"]

    # Switch company: a refresh with legal_entity_id, through the library's own call.
    switched = page.evaluate("spa.switchTo('globex')")
    assert switched["ok"], (switched, page.console)
    after = switched["user"]
    assert claims(after["access_token"])["legal_entity_id"] == "globex"
    assert claims(after["access_token"])["sub"] == profile["sub"]
    assert after["refresh_token"] != user["refresh_token"]  # rotated
    assert after["profile"]["sub"] == profile["sub"]
    if after["id_token"] != user["id_token"]:  # a refresh's ID token, validated by the library
        assert after["profile"]["legal_entity_id"] == "globex"

    # The page reads UserInfo for the new token, and an error answer too (WWW-Authenticate is
    # exposed to it).
    info = page.evaluate("spa.userinfo()")
    assert info["status"] == 200 and info["body"]["legal_entity_id"] == "globex"
    refused = page.evaluate("spa.userinfo('not-a-token')")
    assert refused["status"] == 401 and refused["body"]["error"] == "invalid_token"
    assert refused["wwwAuthenticate"].startswith("Bearer")
    # The browser asked first (a bearer token is not a simple request): a preflight, answered.
    assert ("OPTIONS", "/oauth/userinfo", 204) in requests_served(web)

    # revokeTokens: the access token and the session stop at once.
    revoked = page.evaluate("spa.revoke()")
    assert revoked["ok"], (revoked, page.console)
    assert introspect(web, after["access_token"]) == {"active": False}
    r = requests.post(
        f"{web.issuer}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": after["refresh_token"],
            "client_id": CLIENT_ID,
        },
        timeout=10,
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

    # signoutRedirect: RP-initiated logout with the ID token, back to the storefront.
    page.evaluate("spa.signOut()")
    page.wait_for_url(f"{spa}/signed-out.html*")
    assert ready(page)["signedOut"]
    assert page.evaluate("spa.user()") is None
    # The browser session on the service ended: signing in asks for the password again.
    page.goto(f"{spa}/")
    page.get_by_role("button", name="Sign in with the shop's account").click()
    page.wait_for_url(f"{web.issuer}/oauth/authorize*")
    page.get_by_label("Password").wait_for()


def test_silent_renew_needs_the_refresh_token(web, spa, page):
    """signinSilent through an iframe (prompt=none) cannot renew: the storefront's iframe is
    cross-site to the service, so the SameSite=Lax browser-session cookie is not sent and the
    service answers login_required (and its pages are never framed: frame-ancestors 'none').
    With a refresh token, signinSilent uses it and renews."""
    user = sign_in(page, spa)
    framed = page.evaluate("spa.iframeRenew()")
    assert not framed["ok"]
    assert framed["code"] == "login_required", framed
    renewed = page.evaluate("spa.switchTo('acme')")
    assert renewed["ok"], (renewed, page.console)
    assert renewed["user"]["access_token"] != user["access_token"]
    assert claims(renewed["user"]["access_token"])["legal_entity_id"] == "acme"
