"""Fuzzing the token, introspection and revocation endpoints with hypothesis: whatever arrives,
never a 5xx, always the documented error format, and no state change on any error.

FUZZ_EXAMPLES (default 3000) cases per endpoint group and backend: over 5,000 in CI.
"""

from __future__ import annotations

import base64
import hashlib
import os
from urllib.parse import quote

import pytest
from conftest import Storefront
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from token_service.extensions import db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))
# Audit events are meant to be written on errors (failed logins); everything else must not move.
STATE_TABLES = [
    "customers",
    "legal_entities",
    "assignments",
    "customer_groups",
    "group_scopes",
    "group_members",
    "scopes",
    "clients",
    "sessions",
    "refresh_tokens",
]

NAMES = [
    "grant_type",
    "client_id",
    "client_secret",
    "username",
    "password",
    "refresh_token",
    "legal_entity_id",
    "scope",
    "token",
    "token_type_hint",
    "code",
    "redirect_uri",
]
GRANTS = ["password", "refresh_token", "client_credentials", "authorization_code", "", "PASSWORD"]


def state(app) -> str:
    """A digest of every row of every state table."""
    digest = hashlib.sha256()
    with app.app_context():
        for table in STATE_TABLES:
            rows = db.session.execute(text(f"SELECT * FROM {table}")).all()
            for row in sorted(map(repr, rows)):
                digest.update(row.encode())
        db.session.rollback()
    return digest.hexdigest()


def values(pool):
    return st.one_of(
        st.sampled_from(pool),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
        st.sampled_from(["", " ", "\x00", "%", "&", "=", "a" * 5000, "é", "\ud7ff"]),
    )


@st.composite
def requests(draw, pool):
    """A form body (valid-looking or not), a content type and maybe an Authorization header."""
    pairs = draw(
        st.lists(
            st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), values(pool)),
            max_size=8,
        )
    )
    if draw(st.booleans()):
        pairs.insert(0, ("grant_type", draw(st.sampled_from(GRANTS))))
    body = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.sampled_from(["%zz", "a=%ff%fe", "&&&", "=", "a=b=c", "\x00"]))
    content_type = draw(
        st.sampled_from(
            ["application/x-www-form-urlencoded"] * 6
            + ["application/x-www-form-urlencoded; charset=utf-8", "application/json", "", None]
        )
    )
    auth = draw(
        st.one_of(
            st.none(),
            st.sampled_from(pool).map(
                lambda v: "Basic " + base64.b64encode(f"{v}:{v}".encode()).decode()
            ),
            st.text(max_size=30),
            st.binary(max_size=20).map(lambda b: "Basic " + base64.b64encode(b).decode()),
        )
    )
    return body, content_type, auth


@pytest.fixture
def pool(app):
    """Real values to mix in: live tokens, client ids, emails, entity ids, secrets."""
    storefront = Storefront(app.test_client())
    login = storefront.login()
    return [
        "storefront",
        "order-service",
        "admin-cli",
        "alice@acme.test",
        "bob@acme.test",
        "correct horse battery staple",
        "acme",
        "globex",
        "acme-logistics",
        login.json["refresh_token"],
        login.json["access_token"],
        app.secrets["admin-cli"],
        app.secrets["order-service"],
        "order.order_read_le",
        "refresh_token",
        "access_token",
    ]


def check(app, path: str, request, before: str) -> str:
    body, content_type, auth = request
    headers = {"Authorization": auth} if auth is not None else {}
    try:
        headers and headers["Authorization"].encode("latin-1")
    except UnicodeEncodeError:
        headers = {}
    if auth and ("\r" in auth or "\n" in auth):  # no HTTP server passes such a header on
        headers = {}
    client = app.test_client()
    kwargs = {"data": body.encode("utf-8", "surrogatepass"), "headers": headers}
    if content_type is not None:
        kwargs["content_type"] = content_type
    r = client.post(path, **kwargs)
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True))
    if r.status_code >= 400:
        assert r.headers["Content-Type"].startswith("application/json")
        assert isinstance(r.json.get("error"), str), r.json
        assert r.headers["Cache-Control"] == "no-store"
        after = state(app)
        assert after == before, f"state changed on error {r.status_code} {r.json}"
        return after
    return state(app)


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_fuzz_endpoint(app, pool, path):
    current = {"state": state(app)}

    @settings(
        max_examples=EXAMPLES // 3 if path != "/oauth/token" else EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(request=requests(pool))
    def run(request):
        current["state"] = check(app, path, request, current["state"])

    run()
