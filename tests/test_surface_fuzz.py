"""Issue 25: arbitrary parameters and bodies (control characters, non-ASCII digits, lookalike
addresses, deep nesting, wrong types) sent to every hosted page, the Emporix-compatible paths
and self-service: never a 5xx, and every answer in its surface's shape. test_fuzz.py does the
same for the OAuth endpoints.

SURFACE_FUZZ_EXAMPLES (default 120) cases per surface and backend.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import pytest
from conftest import Storefront
from frontdoor import REDIRECT_URI, authorize_params, register
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

EXAMPLES = int(os.environ.get("SURFACE_FUZZ_EXAMPLES", "120"))
TENANT = "demo"

# Text a form or a query can carry: any code point but lone surrogates (which no URL or form
# encoding can carry); JSON bodies get those too, as \ud800 escapes.
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
TRICKY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01",
    "\x7f",
    "\x85",
    "\u200b",
    "²",
    "①",
    "٣",
    "１",
    "-1",
    "9" * 40,
    "a" * 5000,
    "%",
    "%00",
    "alice@acme.test",
    "аlice@acme.test",
    "alice\u200b@acme.test",
    "ａｌｉｃｅ@acme.test",
    "acme",
    "globex",
    "cus_bob",
    "storefront",
    "web-shop",
    "none",
    "login consent",
    REDIRECT_URI,
    "https://evil.test/",
]
VALUES = st.one_of(ANY_TEXT, st.sampled_from(TRICKY), st.from_regex(r"[0-9]{1,14}", fullmatch=True))
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    VALUES,
    st.text(max_size=6),  # surrogates included
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@st.composite
def json_bodies(draw, names: list[str]) -> tuple[bytes, str | None]:
    """A JSON body whose members are the surface's own names (or not), or no JSON at all."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        raw = deep(draw(st.integers(20, 3000)))
    elif kind == 1:
        raw = '{"' + draw(st.sampled_from(names)) + '": ' + deep(draw(st.integers(20, 3000))) + "}"
    elif kind == 2:
        raw = draw(st.sampled_from(["", "{", "nul", "NaN", '{"a":1,"a":2}', "\x00", "[]", "1"]))
    else:
        keys = st.one_of(st.sampled_from(names), ANY_TEXT)
        raw = json.dumps(draw(st.dictionaries(keys, JSON_VALUES, max_size=4)))
    content_type = draw(st.sampled_from(["application/json"] * 5 + ["text/plain", None]))
    return raw.encode("utf-8", "surrogatepass"), content_type


def pairs(names: list[str]):
    return st.lists(st.tuples(st.one_of(st.sampled_from(names), ANY_TEXT), VALUES), max_size=6)


def run_examples(test) -> None:
    settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )(test)()


def no_5xx(r) -> None:
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:500])


def send(client, method: str, path: str, query, body, bearer):
    """One API request: the query, the body for a POST or PUT, a bearer token if sendable;
    never a 5xx."""
    headers = {}
    if bearer is not None and bearer.isascii() and bearer.isprintable():
        headers["Authorization"] = f"Bearer {bearer}"
    kwargs = {"query_string": MultiDict(query), "headers": headers}
    if method in ("POST", "PUT"):
        kwargs["data"], content_type = body
        if content_type is not None:
            kwargs["content_type"] = content_type
    r = client.open(path, method=method, **kwargs)
    no_5xx(r)
    return r


# -- hosted pages -----------------------------------------------------------------------------

PAGE_NAMES = [
    *authorize_params(),
    "max_age",
    "prompt",
    "login_hint",
    "legal_entity_id",
    "email",
    "password",
    "csrf_token",
    "authorization_request",
    "decision",
    "id_token_hint",
    "post_logout_redirect_uri",
    "client_id",
    "state",
    "token",
    "confirm_password",
    "decision",
]
PAGES = [
    ("GET", "/oauth/authorize"),
    ("POST", "/oauth/authorize"),
    ("POST", "/oauth/authorize/login"),
    ("POST", "/oauth/authorize/select"),
    ("POST", "/oauth/authorize/consent"),
    ("GET", "/oauth/logout"),
    ("POST", "/oauth/logout"),
    ("GET", "/activate"),
    ("POST", "/activate"),
    ("GET", "/invitations/join"),
    ("POST", "/invitations/join"),
    ("POST", "/invitations/join/sign-in"),
]


def assert_page_shape(r) -> None:
    """A hosted page answers with a page, or redirects to the registered client only."""
    no_5xx(r)
    if r.status_code in (302, 303):
        target = urlsplit(r.headers["Location"])
        assert target.scheme == "" or r.headers["Location"].startswith(
            (REDIRECT_URI, "http://127.0.0.1:9999/")
        ), r.headers["Location"]
    else:
        assert r.content_type.startswith("text/html"), (r.status_code, r.content_type)
        assert r.headers["X-Frame-Options"] == "DENY"


def test_hosted_pages_answer_any_input_with_a_page(app, client):
    register(app)
    # A signed-in browser with a CSRF cookie, so that the forms' own checks are reached too.
    page = client.get("/oauth/authorize", query_string=_valid_authorize())
    csrf = _field(page.get_data(as_text=True), "csrf_token")
    carried = _field(page.get_data(as_text=True), "authorization_request")

    @given(
        page=st.sampled_from(PAGES),
        extra=pairs(PAGE_NAMES),
        base=st.booleans(),
        with_csrf=st.booleans(),
    )
    def check(page, extra, base, with_csrf):
        method, path = page
        fields = list(_valid_authorize().items()) if base and "authorize" in path else []
        if with_csrf and method == "POST":
            fields += [("csrf_token", csrf), ("authorization_request", carried)]
        fields += extra
        if method == "GET":
            r = client.get(path, query_string=MultiDict(fields))
        else:
            r = client.post(path, data=MultiDict(fields))
        assert_page_shape(r)

    run_examples(check)


def _valid_authorize() -> dict:
    return {k: v for k, v in authorize_params().items() if not k.startswith("_")}


def _field(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


# -- the Emporix-compatible layer -------------------------------------------------------------

EMPORIX_NAMES = [
    "tenant",
    "client_id",
    "refresh_token",
    "refreshToken",
    "legalEntityId",
    "accessToken",
    "email",
    "password",
    "userId",
    "groupId",
]
EMPORIX_ERROR = {"status", "type", "message"}
IAM_ERROR = {"code", "status", "message", "details"}


@pytest.fixture
def tokens(app, client) -> dict[str, str]:
    anonymous = client.get(
        "/customerlogin/auth/anonymous/login",
        query_string={"tenant": TENANT, "client_id": "storefront"},
    ).json
    login = Storefront(client).login(legal_entity_id="acme").json
    return {
        "anonymous": anonymous["access_token"],
        "anonymous_refresh": anonymous["refresh_token"],
        "customer": login["access_token"],
        "refresh": login["refresh_token"],
    }


def emporix_paths(tokens):
    ids = st.one_of(VALUES.filter(lambda v: "/" not in v and "?" not in v and "#" not in v))
    return st.one_of(
        st.tuples(st.just("GET"), st.just("/customerlogin/auth/anonymous/login")),
        st.tuples(st.just("GET"), st.just("/customerlogin/auth/anonymous/refresh")),
        st.tuples(st.just("POST"), st.just(f"/customer/{TENANT}/login")),
        st.tuples(st.just("GET"), st.just(f"/customer/{TENANT}/refreshauthtoken")),
        st.tuples(st.just("GET"), st.just(f"/customer/{TENANT}/logout")),
        st.tuples(st.just("GET"), st.just(f"/customer/{TENANT}/validateauthtoken")),
        st.tuples(st.just("GET"), st.just(f"/customer/{TENANT}/me")),
        st.tuples(st.just("GET"), st.just(f"/iam/{TENANT}/groups")),
        st.tuples(
            st.sampled_from(["GET", "POST"]), ids.map(lambda g: f"/iam/{TENANT}/groups/{g}/users")
        ),
        st.tuples(
            st.just("DELETE"),
            st.tuples(ids, ids).map(lambda p: f"/iam/{TENANT}/groups/{p[0]}/users/{p[1]}"),
        ),
    )


def test_emporix_paths_answer_any_input_in_emporix_shapes(app, client, tokens):
    names = EMPORIX_NAMES

    @given(
        route=emporix_paths(tokens),
        query=pairs(names),
        body=json_bodies(names),
        bearer=st.one_of(st.none(), st.sampled_from(sorted(tokens.values())), VALUES),
    )
    def check(route, query, body, bearer):
        method, path = route
        r = send(client, method, path, query, body, bearer)
        if r.status_code >= 400:
            shape = IAM_ERROR if path.startswith("/iam/") else EMPORIX_ERROR
            assert r.content_type.startswith("application/json"), r.content_type
            assert set(r.json) - {"fault"} == shape, (path, r.json)

    run_examples(check)


# -- self-service -----------------------------------------------------------------------------

SELF_SERVICE_NAMES = ["email", "token", "password", "legal_entity_id", "groups", "id"]


def self_service_paths():
    ids = VALUES.filter(lambda v: "/" not in v and "?" not in v and "#" not in v)
    return st.one_of(
        st.tuples(st.just("GET"), st.sampled_from(["/members", "/groups", "/audit-events"])),
        st.tuples(st.just("POST"), st.sampled_from(["/invitations", "/invitations/accept"])),
        st.tuples(st.just("GET"), st.just("/invitations")),
        st.tuples(st.just("DELETE"), ids.map(lambda i: f"/invitations/{i}")),
        st.tuples(
            st.sampled_from(["PUT", "DELETE"]),
            st.tuples(ids, ids).map(lambda p: f"/groups/{p[0]}/members/{p[1]}"),
        ),
        st.tuples(st.just("DELETE"), ids.map(lambda c: f"/members/{c}")),
    )


def test_self_service_answers_any_input_in_its_shape(app, client, tokens):
    @given(
        route=self_service_paths(),
        query=pairs(["limit", "cursor", "action", "since"]),
        body=json_bodies(SELF_SERVICE_NAMES),
        bearer=st.one_of(st.just(tokens["customer"]), st.none(), VALUES),
    )
    def check(route, query, body, bearer):
        method, path = route
        r = send(client, method, "/self-service" + path, query, body, bearer)
        if r.status_code >= 400:
            assert r.content_type.startswith("application/json"), r.content_type
            assert {"error", "message"} <= set(r.json) <= {"error", "message", "fields"}, r.json

    run_examples(check)
