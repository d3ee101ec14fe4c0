"""CORS for browser apps on other origins (issue 27, item 1; token_service/api/cors.py): which
paths answer which origins, preflights, error answers, `Vary`, no credentials; the clients'
`allowed_origins` (admin API, CLI, the default from redirect URIs). Both backends."""

from __future__ import annotations

import pytest
from conftest import basic_auth
from sqlalchemy.exc import OperationalError
from test_admin import Admin

from token_service.api import cors
from token_service.clients import any_client_origins, forget_client, origin_of
from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.models import Client
from token_service.services.base import ServiceError
from token_service.services.clients import check_allowed_origins, create_client

SHOP = "https://shop.example"  # spa's, from its redirect URI (the default)
PARTNER = "https://partner.example"  # partner's, registered (its redirect URI's is not)
EVIL = "https://evil.example"  # nobody's
ORIGINS = (SHOP, PARTNER, EVIL)


@pytest.fixture
def spa(app):
    """Two browser clients: `spa` (origins from its redirect URIs), `partner` (its own list)."""
    with app.app_context():
        ceiling = db.session.get(Client, "storefront").scope + " openid email"
        create_client(
            "spa",
            confidential=False,
            first_party=True,
            grant_types=["authorization_code", "password", "refresh_token"],
            scope=ceiling,
            redirect_uris=[f"{SHOP}/callback", "http://localhost:5173/callback"],
        )
        create_client(
            "partner",
            confidential=False,
            grant_types=["authorization_code", "refresh_token"],
            scope="openid",
            redirect_uris=["https://partner-app.example/callback"],
            allowed_origins=[PARTNER],
        )
        db.session.commit()
    return app


@pytest.fixture
def token(spa, client) -> str:
    """alice's access token from `spa`, acting for ACME (where she is an admin)."""
    r = client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "spa",
            "username": "alice@acme.test",
            "password": DEMO_PASSWORD,
            "legal_entity_id": "acme",
        },
    )
    assert r.status_code == 200, r.json
    return r.json["access_token"]


def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def varies_on_origin(response) -> bool:
    values = ",".join(response.headers.getlist("Vary"))
    return "origin" in {v.strip().lower() for v in values.split(",")}


# Paths by kind: (method, path, form, bearer?). Their status does not matter here (an error
# answer must be readable too), only their CORS headers.
PUBLIC_PATHS = [
    ("GET", "/.well-known/openid-configuration", None, False),
    ("GET", "/.well-known/oauth-authorization-server", None, False),
    ("GET", "/jwks.json", None, False),
]
TOKEN_PATHS = [  # the request names `spa`
    ("POST", "/oauth/token", {"grant_type": "refresh_token", "refresh_token": "x"}, False),
    ("POST", "/oauth/revoke", {"token": "x"}, False),
]
CUSTOMER_PATHS = [
    ("GET", "/oauth/userinfo", None, True),
    ("POST", "/oauth/userinfo", None, True),
    ("GET", "/self-service/members", None, True),
    ("GET", "/self-service/groups", None, True),
    ("GET", "/customer/demo/me", None, True),
    ("GET", "/customer/demo/validateauthtoken", None, True),
    ("GET", "/iam/demo/groups", None, True),
    ("GET", "/customerlogin/auth/anonymous/login?tenant=demo&client_id=storefront", None, False),
]
NEVER_PATHS = [
    ("GET", "/oauth/authorize?client_id=spa&response_type=code", None, False),
    ("GET", "/oauth/logout", None, False),
    ("GET", "/activate", None, False),
    ("GET", "/invitations/join", None, False),
    ("GET", "/demo", None, False),
    ("GET", "/admin/clients", None, True),
    ("POST", "/oauth/introspect", {"token": "x"}, False),
]


def send(client, method, path, form, bearer, token, origin=None, **headers):
    if origin is not None:
        headers["Origin"] = origin
    if bearer:
        headers["Authorization"] = f"Bearer {token}"
    if form is not None and path in ("/oauth/token", "/oauth/revoke"):
        form = {**form, "client_id": "spa"}
    return client.open(path, method=method, data=form, headers=headers)


def preflight(client, method, path, origin, request_headers="authorization, content-type"):
    return client.options(
        path.split("?")[0],
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": request_headers,
        },
    )


# Which origin may read what: (kind's paths, origin, expected Access-Control-Allow-Origin).
ACTUAL = [
    *[(p, o, "*") for p in PUBLIC_PATHS for o in ORIGINS],
    *[(p, SHOP, SHOP) for p in TOKEN_PATHS],
    *[(p, PARTNER, None) for p in TOKEN_PATHS],  # partner's origin, but the request is spa's
    *[(p, EVIL, None) for p in TOKEN_PATHS],
    *[(p, SHOP, SHOP) for p in CUSTOMER_PATHS],
    *[(p, PARTNER, PARTNER) for p in CUSTOMER_PATHS],
    *[(p, EVIL, None) for p in CUSTOMER_PATHS],
    *[(p, o, None) for p in NEVER_PATHS for o in (SHOP, EVIL)],
]


def _id(value):
    if isinstance(value, tuple):
        return f"{value[0]} {value[1].split('?')[0]}"
    return str(value).removeprefix("https://")


@pytest.mark.parametrize(("path", "origin", "expected"), ACTUAL, ids=_id)
def test_actual_requests(spa, client, token, path, origin, expected):
    r = send(client, *path, token, origin=origin)
    assert r.status_code < 500, r.get_data(as_text=True)
    headers = cors_headers(r)
    assert headers.get("Access-Control-Allow-Origin") == expected
    assert "Access-Control-Allow-Credentials" not in headers  # never credentials mode
    if path in NEVER_PATHS:
        assert headers == {}
        assert not varies_on_origin(r)
    elif path in PUBLIC_PATHS:
        assert headers == {"Access-Control-Allow-Origin": "*"}
    else:
        assert varies_on_origin(r)  # allowed or not
        if expected is not None:
            exposed = {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}
            assert {"WWW-Authenticate", "Retry-After", "DPoP-Nonce"} <= exposed
        else:
            assert headers == {}


PREFLIGHT = [
    *[(p, o, "*") for p in PUBLIC_PATHS for o in ORIGINS],
    # A preflight has no body: an origin of any client may go on to the actual request.
    *[(p, o, o) for p in TOKEN_PATHS + CUSTOMER_PATHS for o in (SHOP, PARTNER)],
    *[(p, EVIL, None) for p in TOKEN_PATHS + CUSTOMER_PATHS],
    *[(p, o, None) for p in NEVER_PATHS for o in (SHOP, EVIL)],
]
METHODS = {
    "/oauth/token": "POST",
    "/oauth/revoke": "POST",
    "/oauth/userinfo": "GET, HEAD, POST",
    "/self-service/members": "GET, HEAD",
    "/iam/demo/groups": "GET, HEAD",
}


@pytest.mark.parametrize(("path", "origin", "expected"), PREFLIGHT, ids=_id)
def test_preflights(spa, client, path, origin, expected):
    method, url = path[0], path[1]
    r = preflight(client, method, url, origin)
    headers = cors_headers(r)
    assert headers.get("Access-Control-Allow-Origin") == expected
    assert "Access-Control-Allow-Credentials" not in headers
    if path in NEVER_PATHS:  # Flask's own answer to OPTIONS: no Access-Control-Allow-*
        assert headers == {}
        return
    assert r.status_code == 204
    assert r.get_data() == b""
    if expected is None:
        assert headers == {}
        assert varies_on_origin(r)
        return
    if expected != "*":
        assert varies_on_origin(r)
    allowed_methods = {m.strip() for m in headers["Access-Control-Allow-Methods"].split(",")}
    assert method in allowed_methods
    assert "OPTIONS" not in allowed_methods
    if url.split("?")[0] in METHODS:
        assert headers["Access-Control-Allow-Methods"] == METHODS[url.split("?")[0]]
    allowed_headers = {
        h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "dpop"} <= allowed_headers
    assert 0 < int(headers["Access-Control-Max-Age"]) <= 86400


def test_a_preflight_for_a_path_that_does_not_exist_allows_nothing(spa, client):
    r = preflight(client, "GET", "/self-service/nothing-here", SHOP)
    assert r.status_code == 204
    assert cors_headers(r) == {}


def test_self_service_preflights_name_the_methods_of_the_path(spa, client):
    r = preflight(client, "PUT", "/self-service/groups/g1/members/c1", SHOP)
    assert r.headers["Access-Control-Allow-Methods"] == "DELETE, PUT"
    assert r.headers["Access-Control-Allow-Origin"] == SHOP


def test_without_origin_restricted_paths_still_vary_and_public_ones_say_any(spa, client, token):
    """The Fetch standard's advice for caches: a resource whose answer depends on `Origin` says
    `Vary: Origin` to every request; one the same for all says `*` to every request."""
    r = client.post(
        "/oauth/token",
        data={"grant_type": "password", "client_id": "spa", "username": "alice@acme.test"},
    )
    assert r.status_code == 400
    assert varies_on_origin(r) and cors_headers(r) == {}
    r = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert varies_on_origin(r) and cors_headers(r) == {}
    r = client.get("/.well-known/openid-configuration")
    assert cors_headers(r) == {"Access-Control-Allow-Origin": "*"}
    assert not varies_on_origin(r)
    r = client.post("/oauth/introspect", data={"token": "x"})
    assert not varies_on_origin(r) and cors_headers(r) == {}


def test_the_code_flow_token_answer_is_readable_by_its_client_only(spa, client):
    """At the token endpoint the client named in the request decides: spa's origin reads spa's
    answer; partner's origin does not, though a preflight from it was answered."""
    form = {"grant_type": "authorization_code", "code": "x", "redirect_uri": f"{SHOP}/callback"}
    for client_id, origin, readable in [
        ("spa", SHOP, True),
        ("spa", "http://localhost:5173", True),  # its other redirect URI's origin
        ("spa", PARTNER, False),
        ("partner", PARTNER, True),
        ("partner", "https://partner-app.example", False),  # a list replaces the default
        ("nobody", SHOP, False),  # an unknown client has no origin
    ]:
        r = client.post(
            "/oauth/token", data={**form, "client_id": client_id}, headers={"Origin": origin}
        )
        assert r.status_code in (400, 401), r.json
        assert ("Access-Control-Allow-Origin" in r.headers) is readable, (client_id, origin)
        if readable:
            assert r.headers["Access-Control-Allow-Origin"] == origin


def test_basic_credentials_name_the_client(spa, client):
    """A client named only in the Authorization header: its origins, even when the credentials
    fail (401 invalid_client, whose WWW-Authenticate the app may read)."""
    with spa.app_context():
        create_client(
            "bff",
            confidential=True,
            grant_types=["client_credentials"],
            scope="openid",
            allowed_origins=["https://bff.example"],
        )
        db.session.commit()
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Origin": "https://bff.example", **basic_auth("bff", "wrong")},
    )
    assert r.status_code == 401
    assert r.headers["Access-Control-Allow-Origin"] == "https://bff.example"
    assert "WWW-Authenticate" in r.headers["Access-Control-Expose-Headers"]
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Origin": SHOP, **basic_auth("bff", "wrong")},
    )
    assert "Access-Control-Allow-Origin" not in r.headers


def test_a_request_naming_no_client_is_answered_as_its_preflight(spa, client):
    """A body that cannot be read names no client: an origin of any client reads the error."""
    for origin, readable in [(SHOP, True), (PARTNER, True), (EVIL, False)]:
        r = client.post(
            "/oauth/token",
            data="%zz",
            content_type="application/x-www-form-urlencoded",
            headers={"Origin": origin},
        )
        assert r.status_code == 400 and r.json["error"] == "invalid_request"
        assert r.headers.get("Access-Control-Allow-Origin") == (origin if readable else None)
        assert varies_on_origin(r)


def test_success_and_every_error_answer_carry_the_headers(spa, client, token, monkeypatch):
    """200, 400, 401, 429 and 503, at the token endpoint and a customer path: the app can read
    each (and the headers it needs: Retry-After, WWW-Authenticate)."""
    shop = {"Origin": SHOP}
    login = {"grant_type": "password", "client_id": "spa", "username": "bob@acme.test"}
    r = client.post("/oauth/token", data={**login, "password": DEMO_PASSWORD}, headers=shop)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == SHOP
    refresh_token = r.json["refresh_token"]

    free = spa.config["SETTINGS"].login_throttle_free_attempts
    statuses = []
    for _ in range(free + 2):
        r = client.post("/oauth/token", data={**login, "password": "wrong"}, headers=shop)
        statuses.append(r.status_code)
        assert r.headers["Access-Control-Allow-Origin"] == SHOP
    assert statuses[0] == 400 and statuses[-1] == 429
    assert "Retry-After" in r.headers
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]

    r = client.get("/oauth/userinfo", headers={**shop, "Authorization": "Bearer nonsense"})
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert r.headers["Access-Control-Allow-Origin"] == SHOP

    r = client.get("/self-service/members", headers={**shop, "Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == SHOP

    def outage(request):
        raise OperationalError("SELECT 1", {}, ConnectionError("the database is down"))

    monkeypatch.setattr(spa.extensions["token_endpoint"], "handle", outage)
    r = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "client_id": "spa", "refresh_token": refresh_token},
        headers=shop,
    )
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert r.headers["Access-Control-Allow-Origin"] == SHOP
    assert varies_on_origin(r)


def test_an_outage_on_a_cold_cache_answers_from_the_last_set_read(spa, monkeypatch):
    """The database is out and the client is not cached: the origins of any client, as last
    read, stand in (the answer is a 503 that the app should be able to read)."""

    def down(client_id):
        raise OperationalError("SELECT", {}, ConnectionError("the database is down"))

    with spa.test_request_context():
        assert SHOP in any_client_origins()
        forget_client("spa")
        monkeypatch.setattr(cors, "load_client", down)
        request = cors.TokenRequest(params={"client_id": "spa"})
        assert cors.token_headers(SHOP, request)[0] == ("Access-Control-Allow-Origin", SHOP)
        assert cors.token_headers(EVIL, request) == [cors.VARY]


# -- the client field ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://shop.example", "https://shop.example"),
        ("https://shop.example/", "https://shop.example"),
        ("HTTPS://Shop.Example:443", "https://shop.example"),
        ("https://shop.example:8443", "https://shop.example:8443"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_origins_are_kept_as_browsers_send_them(given, stored):
    assert check_allowed_origins([given]) == [stored]
    assert origin_of(f"{given.rstrip('/')}/callback?x=1") == stored


@pytest.mark.parametrize(
    "given",
    [
        "http://shop.example",  # plain http off loopback
        "https://shop.example/app",  # a path
        "https://shop.example?x",
        "https://shop.example#x",
        "https://user@shop.example",
        "https://shop.example:99999",
        "https://[::1",
        "*",
        "null",
        "shop.example",
        "ftp://shop.example",
        "https://shop example",
        "",
        7,
    ],
)
def test_what_is_not_an_origin_is_refused(given):
    with pytest.raises(ServiceError) as refused:
        check_allowed_origins([given])
    assert refused.value.field == "allowed_origins"


def test_admin_api_round_trip_and_the_default(app, client):
    admin = Admin(client, "admin-cli", app.secrets["admin-cli"])
    created = admin.post(
        "/clients",
        json={
            "client_id": "web2",
            "confidential": False,
            "grant_types": ["authorization_code"],
            "scope": "openid",
            "redirect_uris": ["https://web2.example/callback"],
            "allowed_origins": ["HTTPS://App.Example:443/", "http://localhost:3000"],
        },
    )
    assert created.status_code == 201, created.json
    assert created.json["allowed_origins"] == ["https://app.example", "http://localhost:3000"]
    assert admin.get("/clients/web2").json["allowed_origins"] == created.json["allowed_origins"]

    def readable(origin: str) -> bool:
        r = client.post(
            "/oauth/token",
            data={"grant_type": "authorization_code", "code": "x", "client_id": "web2"},
            headers={"Origin": origin},
        )
        assert r.status_code == 400
        return r.headers.get("Access-Control-Allow-Origin") == origin

    assert readable("https://app.example") and readable("http://localhost:3000")
    assert not readable("https://web2.example")  # the list replaces the default

    # null: back to the redirect URIs' origins, at once (the client cache is forgotten).
    r = admin.patch("/clients/web2", json={"allowed_origins": None})
    assert r.status_code == 200 and r.json["allowed_origins"] is None
    assert readable("https://web2.example") and not readable("https://app.example")
    r = admin.patch("/clients/web2", json={"redirect_uris": ["https://moved.example/cb"]})
    assert r.status_code == 200
    assert readable("https://moved.example") and not readable("https://web2.example")
    # []: no origin at all.
    assert admin.patch("/clients/web2", json={"allowed_origins": []}).json["allowed_origins"] == []
    assert not readable("https://moved.example")

    refused = admin.patch("/clients/web2", json={"allowed_origins": ["http://app.example"]})
    assert refused.status_code == 422 and "allowed_origins" in str(refused.json)
    assert (
        admin.post(
            "/clients",
            json={
                "client_id": "web3",
                "grant_types": ["client_credentials"],
                "allowed_origins": ["*"],
            },
        ).status_code
        == 422
    )
    # Left out: null, the default.
    r = admin.post("/clients", json={"client_id": "svc", "grant_types": ["client_credentials"]})
    assert r.status_code == 201 and r.json["allowed_origins"] is None


def test_cli_clients_create_takes_allowed_origins(app):
    runner = app.test_cli_runner()
    done = runner.invoke(
        args=[
            "clients",
            "create",
            "cli-spa",
            "--public",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            "https://cli-spa.example/cb",
            "--allowed-origin",
            "https://one.example",
            "--allowed-origin",
            "https://two.example/",
        ]
    )
    assert done.exit_code == 0, done.output
    refused = runner.invoke(
        args=[
            "clients",
            "create",
            "cli-bad",
            "--public",
            "--grant",
            "authorization_code",
            "--redirect-uri",
            "https://cli-spa.example/cb",
            "--allowed-origin",
            "http://x.example",
        ]
    )
    assert refused.exit_code != 0 and "allowed_origins" in refused.output
    with app.app_context():
        assert db.session.get(Client, "cli-spa").allowed_origins == [
            "https://one.example",
            "https://two.example",
        ]
        assert db.session.get(Client, "cli-bad") is None
