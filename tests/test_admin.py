"""The admin API (DESIGN §4 "Admin API"): authorisation, validation, every resource, and the
effect of each change on live tokens. Runs on both backends like every app-level test."""

from __future__ import annotations

import base64
import json
import time

import pytest
from sqlalchemy import select

from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.kv import StoreUnavailable
from token_service.models import AuditEvent, Client, Customer
from token_service.services import groups

INACTIVE = {"active": False}


class Admin:
    """A client of the admin API with a bearer token from client_credentials."""

    def __init__(self, client, client_id: str, secret: str, scope: str | None = None) -> None:
        self.client = client
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        r = client.post("/oauth/token", data=data, auth=(client_id, secret))
        assert r.status_code == 200, r.json
        self.token = r.json["access_token"]

    def call(self, method: str, path: str, json=None, headers=None, **kwargs):
        headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return self.client.open(
            "/admin" + path, method=method, json=json, headers=headers, **kwargs
        )

    def get(self, path, **kwargs):
        return self.call("GET", path, **kwargs)

    def post(self, path, json=None, **kwargs):
        return self.call("POST", path, json=json, **kwargs)

    def patch(self, path, json=None, **kwargs):
        return self.call("PATCH", path, json=json, **kwargs)

    def delete(self, path, **kwargs):
        return self.call("DELETE", path, **kwargs)

    def all_items(self, path: str, limit: int = 2) -> list[dict]:
        """Walk every page of a list."""
        items, cursor = [], None
        for _ in range(100):
            sep = "&" if "?" in path else "?"
            url = f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            r = self.get(url)
            assert r.status_code == 200, r.json
            assert len(r.json["items"]) <= limit
            items += r.json["items"]
            cursor = r.json["next_cursor"]
            if cursor is None:
                return items
        raise AssertionError("pagination does not end")


@pytest.fixture
def admin(app, client) -> Admin:
    return Admin(client, "admin-cli", app.secrets["admin-cli"])


def customer_id(app, email: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Customer.id).where(Customer.email == email))


def group_id(app, entity: str, code: str) -> str:
    with app.app_context():
        return groups.group_of(entity, code).id


def audit_actions(app, **where) -> list[tuple[str, str, str]]:
    with app.app_context():
        query = select(AuditEvent).order_by(AuditEvent.id)
        for name, value in where.items():
            query = query.where(getattr(AuditEvent, name) == value)
        return [(e.action, e.actor_type, e.actor_id) for e in db.session.scalars(query)]


# -- authorisation ----------------------------------------------------------------------------


def test_no_token_is_401_with_a_bare_challenge(client):
    r = client.get("/admin/legal-entities")
    assert r.status_code == 401
    assert r.json["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert "error=" not in r.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nonsense",
        "Bearer a.b.c",
        "Basic YWRtaW4tY2xpOng=",
        "Bearer",
        "Bearer " + "x" * 5000,
    ],
)
def test_bad_token_is_401_invalid_token(client, header):
    r = client.get("/admin/legal-entities", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json["error"] in ("invalid_token", "invalid_request")
    assert 'error="' in r.headers["WWW-Authenticate"]


def test_expired_or_foreign_tokens_are_refused(app, client):
    now = int(time.time())
    claims = {
        "iss": "http://issuer.test",
        "sub": "admin-cli",
        "aud": "commerce-api",
        "iat": now - 600,
        "exp": now - 1,
        "jti": "j1",
        "client_id": "admin-cli",
        "scope": "admin.read admin.manage",
    }
    key = app.extensions["keyring"].current
    cases = [
        claims,  # expired
        {**claims, "exp": now + 300, "iss": "http://elsewhere.test"},
        {**claims, "exp": now + 300, "sub": "order-service"},  # sub is not the client
        {**claims, "exp": now + 300, "client_id": ["admin-cli"]},
    ]
    for case in cases:
        token = key.encode_jwt(case)
        r = client.get("/admin/legal-entities", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (401, 403), case
    good = key.encode_jwt({**claims, "exp": now + 300})
    r = client.get("/admin/legal-entities", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200


def test_read_scope_reads_but_cannot_write(app, client):
    reader = Admin(client, "admin-cli", app.secrets["admin-cli"], scope="admin.read")
    assert reader.get("/legal-entities").status_code == 200
    r = reader.post("/legal-entities", json={"name": "Initech"})
    assert r.status_code == 403
    assert r.json["error"] == "insufficient_scope"
    assert 'scope="admin.manage"' in r.headers["WWW-Authenticate"]
    manager = Admin(client, "admin-cli", app.secrets["admin-cli"], scope="admin.manage")
    assert manager.get("/legal-entities").status_code == 200  # manage includes reading


def test_other_clients_tokens_are_forbidden(app, client):
    service = Admin(client, "order-service", app.secrets["order-service"])
    r = service.get("/customers")
    assert r.status_code == 403
    assert r.json["error"] == "insufficient_scope"


def test_customer_token_never_reaches_admin_even_with_admin_scopes(app, client, storefront):
    # Give alice's ADMIN group and the storefront the admin scopes: still a customer token.
    with app.app_context():
        group = groups.group_of("acme", "ADMIN").id
        groups.set_group_scopes(group, ["admin.read", "admin.manage", "order.order_read_le"])
        storefront_client = db.session.get(Client, "storefront")
        storefront_client.scope += " admin.read admin.manage"
        db.session.commit()
    login = storefront.login()
    assert "admin.manage" in login.json["scope"].split()
    headers = {"Authorization": f"Bearer {login.json['access_token']}"}
    for method in ("GET", "POST"):
        r = client.open("/admin/legal-entities", method=method, json={}, headers=headers)
        assert r.status_code == 403
        assert r.json["error"] == "insufficient_scope"


def test_revoked_admin_token_is_refused_at_once(app, client, admin):
    assert admin.get("/customers").status_code == 200
    r = client.post(
        "/oauth/revoke", data={"token": admin.token}, auth=("admin-cli", app.secrets["admin-cli"])
    )
    assert r.status_code == 200
    r = admin.get("/customers")
    assert r.status_code == 401
    assert r.json["error"] == "invalid_token"


def test_store_outage_leaves_the_admin_api_working(app, client, admin, storefront, monkeypatch):
    """Was 503 for every admin call (issue 15 #9): the admin API needs the database only."""
    revoked = Admin(client, "admin-cli", app.secrets["admin-cli"])
    r = client.post(
        "/oauth/revoke", data={"token": revoked.token}, auth=("admin-cli", app.secrets["admin-cli"])
    )
    assert r.status_code == 200
    login = storefront.login()

    def down(*args):
        raise StoreUnavailable("down")

    store = app.extensions["token_store"]
    for name in ("get", "get_many", "set", "set_and_publish"):
        monkeypatch.setattr(store, name, down)
    r = admin.get("/customers")
    assert r.status_code == 200 and "Deny-List" not in r.headers
    assert revoked.get("/customers").status_code == 401  # its revocation is on record
    alice = customer_id(app, "alice@acme.test")
    r = admin.delete(f"/customers/{alice}/sessions")
    assert r.status_code == 200 and r.json == {"revoked": 1}
    assert r.headers["Deny-List"] == "queued"
    assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"
    monkeypatch.undo()
    assert app.extensions["deny_list_outbox"].flush() == 0
    assert introspect_as_order_service(app, client, login.json["access_token"]) == INACTIVE


def introspect_as_order_service(app, client, token: str) -> dict:
    auth = ("order-service", app.secrets["order-service"])
    return client.post("/oauth/introspect", data={"token": token}, auth=auth).json


def test_deleted_or_narrowed_client_loses_access_at_once(app, client, admin):
    r = admin.post(
        "/clients",
        json={
            "client_id": "ops-tool",
            "grant_types": ["client_credentials"],
            "scope": "admin.read admin.manage",
        },
    )
    assert r.status_code == 201
    ops = Admin(client, "ops-tool", r.json["client_secret"])
    thing = {"name": "ops.thing_do", "description": "Do things"}
    assert ops.post("/scopes", json=thing).status_code == 201
    assert admin.patch("/clients/ops-tool", json={"scope": "admin.read"}).status_code == 200
    other = {"name": "ops.other_do", "description": "Do other things"}
    assert ops.post("/scopes", json=other).status_code == 403
    assert ops.get("/scopes").status_code == 200
    assert admin.delete("/clients/ops-tool").status_code == 204
    assert ops.get("/scopes").status_code == 401


# -- request validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fields"),
    [
        ("name=Initech", "application/x-www-form-urlencoded", 400, None),
        ('{"name": "Initech"', "application/json", 400, None),
        ('{"name": "A", "name": "B"}', "application/json", 400, None),
        (
            '{"name": "A", "account_limit": {"currency": "EUR", "value": NaN}}',
            "application/json",
            400,
            None,
        ),
        ("[" * 100000 + "]" * 100000, "application/json", 400, None),
        (b'{"name": "\xff"}', "application/json", 400, None),
        ('["Initech"]', "application/json", 422, {"body"}),
        ("{}", "application/json", 422, {"name"}),
        ('{"name": "Initech", "colour": "red"}', "application/json", 422, {"colour"}),
        ('{"name": 7, "type": "GMBH"}', "application/json", 422, {"name", "type"}),
        ('{"name": "   "}', "application/json", 422, {"name"}),
        ('{"name": "Ini\\u0000tech"}', "application/json", 422, {"name"}),
        ('{"name": "Ini\\ud800tech"}', "application/json", 422, {"name"}),
        ('{"name": "' + "x" * 256 + '"}', "application/json", 422, {"name"}),
        (
            '{"name": "A", "account_limit": {"currency": "eur", "value": -1}}',
            "application/json",
            422,
            {"account_limit.currency", "account_limit.value"},
        ),
        (
            '{"name": "A", "account_limit": {"currency": "EUR", "value": 1.234}}',
            "application/json",
            422,
            {"account_limit.value"},
        ),
        (
            '{"name": "A", "account_limit": {"currency": "EUR", "value": true}}',
            "application/json",
            422,
            {"account_limit.value"},
        ),
        ('{"name": "A", "type": "SUBSIDIARY"}', "application/json", 422, {"parent_id"}),
        (
            '{"name": "A", "type": "SUBSIDIARY", "parent_id": "nowhere"}',
            "application/json",
            422,
            {"parent_id"},
        ),
        ('{"name": "A", "parent_id": "acme"}', "application/json", 422, {"parent_id"}),
    ],
)
def test_bodies_are_validated_strictly(admin, body, content_type, status, fields):
    r = admin.post("/legal-entities", data=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.json
    assert set(r.json) <= {"error", "message", "fields"}
    if fields is not None:
        assert set(r.json["fields"]) == fields
    assert admin.get("/legal-entities").json["items"][0]["name"] == "ACME Corp"  # nothing made


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"name": "is required"}),
        ({"name": None}, {"name": "must not be null"}),
        (
            {"name": 7, "type": "GMBH"},
            {"name": "must be a string", "type": "must be one of COMPANY, SUBSIDIARY"},
        ),
        ({"name": "A", "colour": "red"}, {"colour": "unknown field"}),
        ({"name": "Ini\x00tech"}, {"name": "must not contain control characters"}),
        ({"name": "x" * 256}, {"name": "must be at most 255 characters"}),
        ({"name": "A", "id": "-a"}, {"id": "has an invalid format"}),
        (
            {"name": "A", "account_limit": {"currency": "EUR", "value": 1.234}},
            {"account_limit.value": "must have at most two decimals"},
        ),
        ({"name": "A", "account_limit": []}, {"account_limit": "must be an object"}),
    ],
)
def test_validation_messages_name_the_problem(admin, body, fields):
    r = admin.post("/legal-entities", json=body)
    assert r.status_code == 422
    assert r.json == {
        "error": "validation_failed",
        "message": "The request body is invalid.",
        "fields": fields,
    }


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=abc",
        "limit=%EF%BC%91",  # a full-width digit
        "cursor=not-a-cursor",
        "cursor=WzFd",  # [1]: wrong shape
        "type=GMBH",
        "name=%00",
        "name=a&name=b",
    ],
)
def test_bad_query_parameters_are_400(admin, query):
    r = admin.get(f"/legal-entities?{query}")
    assert r.status_code == 400
    assert r.json["error"] == "invalid_request"
    assert r.json["fields"]


def cursor_of(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "values",
    [
        [2**63],  # the review's WzkyMjMzNzIwMzY4NTQ3NzU4MDhd: 500 on SQLite, 503 on PostgreSQL
        [-(2**63) - 1],
        [10**30],
        [1.5],
        [True],
        ["1"],
        [None],
        [[1]],
        [1, 2],
    ],
)
def test_out_of_range_integer_cursors_are_400(admin, values):
    r = admin.get(f"/audit-events?cursor={cursor_of(values)}")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json["error"] == "invalid_request" and "cursor" in r.json["fields"]


def test_the_largest_integer_cursor_is_a_cursor(admin, storefront):
    storefront.login()
    r = admin.get(f"/audit-events?cursor={cursor_of([2**63 - 1])}")
    assert r.status_code == 200 and r.json["items"]


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("/customers/{alice}/sessions", ["+10000-01-01T00:00:00+00:00", "sid_x"]),
        ("/customers/{alice}/sessions", ["2020-01-01T00:00:00", "sid_x"]),  # no zone
        ("/customers/{alice}/sessions", [2**63, "sid_x"]),
        ("/legal-entities", ["\ud800", "acme"]),
        ("/legal-entities", ["a\u0000", "acme"]),
        ("/customers", [2**63]),
        ("/groups", [{"a": 1}]),
        ("/clients", ["x", "y"]),
        ("/scopes", [-1]),
        ("/groups/{group}/members", [2**64]),
    ],
)
def test_every_list_refuses_foreign_cursors(app, admin, path, values):
    alice, group = customer_id(app, "alice@acme.test"), group_id(app, "acme", "ADMIN")
    r = admin.get(path.format(alice=alice, group=group) + f"?cursor={cursor_of(values)}")
    assert r.status_code == 400, (path, values, r.get_data(as_text=True))
    assert "cursor" in r.json["fields"]


@pytest.mark.parametrize(
    "query",
    [
        "since=0001-01-01T00:00:00%2B23:59",
        "until=9999-12-31T23:59:59.999999-23:59",
        f"cursor={cursor_of([2**63 - 1])}&since=0001-01-01T00:00:00Z",
    ],
)
def test_extreme_dates_are_answered(admin, query):
    assert admin.get(f"/audit-events?{query}").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/legal-entities",
        "/legal-entities/acme",
        "/customers",
        "/customers/{alice}/sessions",
        "/customers/{alice}/assignments",
        "/customers/{alice}/effective-scopes?legal_entity_id=acme",
        "/groups",
        "/groups/{group}/members",
        "/scopes",
        "/clients",
        "/signing-keys",
        "/audit-events",
        "/legal-entities?limit=0",  # an error
        "/no-such-route",
    ],
)
def test_every_admin_answer_is_no_store(app, admin, client, path):
    """Lists used to lack it (single resources had it): a shared cache could keep a page of
    customers."""
    url = "/admin" + path.format(
        alice=customer_id(app, "alice@acme.test"), group=group_id(app, "acme", "ADMIN")
    )
    for r in (admin.get(url.removeprefix("/admin")), client.get(url)):  # with and without token
        assert r.headers.get("Cache-Control") == "no-store", (path, r.status_code)


@pytest.mark.parametrize("path", ["/customers/%00", "/customers/" + "x" * 300, "/groups/%7F"])
def test_unreadable_ids_are_404(admin, path):
    assert admin.get(path).status_code == 404
    assert admin.delete(path).status_code == 404


# -- legal entities ---------------------------------------------------------------------------


def test_create_company_and_subsidiary_with_predefined_groups(app, admin):
    r = admin.post(
        "/legal-entities",
        json={"name": "Initech", "account_limit": {"currency": "EUR", "value": 25000.5}},
    )
    assert r.status_code == 201
    company = r.json
    assert company["type"] == "COMPANY" and company["parent_id"] is None
    assert company["account_limit"] == {"currency": "EUR", "value": 25000.5}
    assert r.headers["ETag"] == '"1"'
    assert r.headers["Location"].endswith(f"/admin/legal-entities/{company['id']}")
    r = admin.post(
        "/legal-entities",
        json={
            "id": "initech-uk",
            "name": "Initech UK",
            "type": "SUBSIDIARY",
            "parent_id": company["id"],
        },
    )
    assert r.status_code == 201
    assert r.json["parent_id"] == company["id"]
    groups = admin.get(f"/groups?legal_entity_id={company['id']}").json["items"]
    assert sorted(g["code"] for g in groups) == ["ADMIN", "BUYER", "CONTACT", "REQUESTER"]
    assert all(g["predefined"] for g in groups)
    assert admin.post("/legal-entities", json={"id": "initech-uk", "name": "X"}).status_code == 409
    assert ("legal_entity.created", "client", "admin-cli") in audit_actions(
        app, target="initech-uk"
    )


def test_update_with_optimistic_locking(app, admin):
    r = admin.get("/legal-entities/globex")
    etag = r.headers["ETag"]
    r = admin.patch(
        "/legal-entities/globex",
        json={"name": "Globex Corporation", "account_limit": {"currency": "USD", "value": 10}},
        headers={"If-Match": etag},
    )
    assert r.status_code == 200
    assert r.json["name"] == "Globex Corporation"
    assert r.json["version"] == 2
    assert r.headers["ETag"] == '"2"'
    stale = admin.patch("/legal-entities/globex", json={"name": "G"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json["error"] == "precondition_failed"
    assert admin.get("/legal-entities/globex").json["name"] == "Globex Corporation"
    r = admin.patch(
        "/legal-entities/globex", json={"account_limit": None}, headers={"If-Match": "*"}
    )
    assert r.status_code == 200 and r.json["account_limit"] is None
    r = admin.patch("/legal-entities/globex", json={"type": "SUBSIDIARY"})
    assert r.status_code == 422 and "type" in r.json["fields"]
    assert admin.patch("/legal-entities/nowhere", json={"name": "X"}).status_code == 404
    assert ("legal_entity.updated", "client", "admin-cli") in audit_actions(app, target="globex")


def test_moving_a_subsidiary_never_makes_a_cycle(admin):
    r = admin.post(
        "/legal-entities",
        json={
            "id": "acme-east",
            "name": "ACME East",
            "type": "SUBSIDIARY",
            "parent_id": "acme-logistics",
        },
    )
    assert r.status_code == 201
    # acme-logistics under its own subsidiary, or under itself: refused.
    for parent in ("acme-east", "acme-logistics"):
        r = admin.patch("/legal-entities/acme-logistics", json={"parent_id": parent})
        assert r.status_code == 409, parent
        assert "parent_id" in r.json["fields"]
    r = admin.patch("/legal-entities/acme-east", json={"parent_id": "globex"})
    assert r.status_code == 200 and r.json["parent_id"] == "globex"
    r = admin.patch("/legal-entities/acme", json={"parent_id": "globex"})
    assert r.status_code == 422  # a company has no parent


def test_list_filters_and_pagination(admin):
    for i in range(5):
        r = admin.post("/legal-entities", json={"id": f"shop-{i}", "name": f"Shop 100% {i}"})
        assert r.status_code == 201
    everything = admin.all_items("/legal-entities", limit=2)
    assert len(everything) == 8
    assert [e["name"] for e in everything] == sorted(e["name"] for e in everything)
    assert len({e["id"] for e in everything}) == 8
    shops = admin.all_items("/legal-entities?name=100%25", limit=3)
    assert {e["id"] for e in shops} == {f"shop-{i}" for i in range(5)}
    assert admin.get("/legal-entities?name=0_").json["items"] == []  # no wildcards
    subsidiaries = admin.get("/legal-entities?type=SUBSIDIARY").json["items"]
    assert [e["id"] for e in subsidiaries] == ["acme-logistics"]
    children = admin.get("/legal-entities?parent_id=acme").json["items"]
    assert [e["id"] for e in children] == ["acme-logistics"]


def test_delete_entity_needs_cascade_and_stops_tokens(admin, storefront, introspect):
    login = storefront.login(legal_entity_id="globex")
    assert admin.delete("/legal-entities/acme").status_code == 409  # subsidiary, members
    r = admin.delete("/legal-entities/globex")
    assert r.status_code == 409
    assert admin.delete("/legal-entities/globex?cascade=maybe").status_code == 400
    assert admin.delete("/legal-entities/globex?cascade=true").status_code == 204
    assert introspect(login.json["access_token"]) == INACTIVE
    assert admin.get("/legal-entities/globex").status_code == 404
    assert admin.delete("/legal-entities/globex").status_code == 404
    r = admin.post("/legal-entities", json={"id": "empty", "name": "Empty"})
    assert admin.delete("/legal-entities/empty", headers={"If-Match": '"7"'}).status_code == 412
    assert admin.delete("/legal-entities/empty", headers={"If-Match": '"1"'}).status_code == 204


# -- customers --------------------------------------------------------------------------------


def test_customer_lifecycle_never_shows_the_password(app, admin, storefront):
    r = admin.post(
        "/customers",
        json={
            "email": "Carol@Globex.test",
            "password": "s3cret-enough",
            "default_legal_entity_id": "globex",
        },
    )
    assert r.status_code == 201, r.json
    carol = r.json
    assert carol["email"] == "carol@globex.test"
    assert carol["has_password"] is True
    assert carol["default_legal_entity_id"] == "globex"
    assert "password" not in r.get_data(as_text=True).replace("has_password", "")
    assert "argon2" not in r.get_data(as_text=True)
    assert admin.get(f"/customers/{carol['id']}").json == carol
    # Assigned to her default entity, in its CONTACT group.
    assignments = admin.get(f"/customers/{carol['id']}/assignments").json["items"]
    assert [(a["legal_entity_id"], a["type"]) for a in assignments] == [("globex", "CONTACT")]
    login = storefront.login("carol@globex.test", "s3cret-enough")
    assert login.status_code == 200 and login.json["legal_entity_id"] == "globex"
    # Unique whatever the case.
    assert admin.post("/customers", json={"email": "CAROL@globex.test"}).status_code == 409
    # Without a password, no password login.
    r = admin.post("/customers", json={"email": "dave@globex.test"})
    assert r.status_code == 201 and r.json["has_password"] is False
    assert audit_actions(app, customer_id=carol["id"])[:2] == [
        ("customer.created", "client", "admin-cli"),
        ("assignment.created", "client", "admin-cli"),
    ]


def test_failed_request_leaves_nothing_behind(admin):
    r = admin.post(
        "/customers", json={"email": "erin@x.test", "default_legal_entity_id": "nowhere"}
    )
    assert r.status_code == 404
    assert r.json["fields"] == {"default_legal_entity_id": "legal entity not found"}
    assert admin.get("/customers?email=erin").json["items"] == []


def test_list_customers_by_email_and_entity(app, admin):
    assert [c["email"] for c in admin.get("/customers?email=ACME").json["items"]] == [
        "alice@acme.test",
        "bob@acme.test",
    ]
    assert [c["email"] for c in admin.get("/customers?legal_entity_id=globex").json["items"]] == [
        "alice@acme.test"
    ]
    assert len(admin.all_items("/customers", limit=1)) == 2


def test_update_customer(app, admin, storefront):
    bob = customer_id(app, "bob@acme.test")
    r = admin.patch(f"/customers/{bob}", json={"default_legal_entity_id": "globex"})
    assert r.status_code == 409  # not assigned there
    assert r.json["fields"] == {"default_legal_entity_id": r.json["message"]}
    r = admin.patch(
        f"/customers/{bob}",
        json={"email": "Robert@ACME.test", "password": "a-new-password"},
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200
    assert r.json["email"] == "robert@acme.test" and r.json["version"] == 2
    assert storefront.login("robert@acme.test", "a-new-password").status_code == 200
    assert storefront.login("robert@acme.test", DEMO_PASSWORD).status_code == 400
    assert admin.patch(f"/customers/{bob}", json={"email": "alice@acme.test"}).status_code == 409
    assert admin.patch(f"/customers/{bob}", json={"password": "short"}).status_code == 422
    r = admin.patch(f"/customers/{bob}", json={"password": None})
    assert r.status_code == 200 and r.json["has_password"] is False


def test_block_and_unblock(app, admin, storefront, introspect):
    login = storefront.login()
    alice = customer_id(app, "alice@acme.test")
    r = admin.post(f"/customers/{alice}/block")
    assert r.status_code == 200 and r.json["status"] == "blocked"
    assert introspect(login.json["access_token"]) == INACTIVE
    assert storefront.login().json["error"] == "invalid_grant"
    r = admin.post(f"/customers/{alice}/unblock", headers={"If-Match": r.headers["ETag"]})
    assert r.status_code == 200 and r.json["status"] == "active"
    assert storefront.login().status_code == 200
    assert [a for a, _, _ in audit_actions(app, customer_id=alice, actor_id="admin-cli")] == [
        "session.revoked",
        "customer.blocked",
        "customer.unblocked",
    ]


def test_delete_customer_revokes_sessions_first(app, admin, storefront, introspect):
    login = storefront.login()
    alice = customer_id(app, "alice@acme.test")
    assert admin.delete(f"/customers/{alice}").status_code == 204
    assert introspect(login.json["access_token"]) == INACTIVE
    assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"
    assert admin.get(f"/customers/{alice}").status_code == 404
    actions = [a for a, _, _ in audit_actions(app, customer_id=alice)]
    assert actions[-2:] == ["session.revoked", "customer.deleted"]


def test_assignments(app, admin, storefront, introspect):
    bob = customer_id(app, "bob@acme.test")
    r = admin.post(
        f"/customers/{bob}/assignments", json={"legal_entity_id": "globex", "type": "BILLING"}
    )
    assert r.status_code == 201
    assert r.json == {
        "legal_entity_id": "globex",
        "legal_entity_name": "Globex",
        "type": "BILLING",
        "created_at": r.json["created_at"],
    }
    again = admin.post(f"/customers/{bob}/assignments", json={"legal_entity_id": "globex"})
    assert again.status_code == 409
    r = admin.post(
        f"/customers/{bob}/assignments", json={"legal_entity_id": "acme-logistics", "type": "BOSS"}
    )
    assert r.status_code == 422 and "type" in r.json["fields"]
    r = admin.post(f"/customers/{bob}/assignments", json={"legal_entity_id": "nowhere"})
    assert r.status_code == 404
    listed = admin.get(f"/customers/{bob}/assignments").json["items"]
    assert [a["legal_entity_id"] for a in listed] == ["acme", "globex"]
    r = admin.patch(f"/customers/{bob}/assignments/globex", json={"type": "LOGISTICS"})
    assert r.status_code == 200 and r.json["type"] == "LOGISTICS"
    # Removing alice's globex assignment stops her token acting there.
    alice = customer_id(app, "alice@acme.test")
    login = storefront.login(legal_entity_id="globex")
    assert admin.delete(f"/customers/{alice}/assignments/globex").status_code == 204
    assert introspect(login.json["access_token"]) == INACTIVE
    assert admin.delete(f"/customers/{alice}/assignments/globex").status_code == 404
    assert admin.get(f"/customers/{alice}/assignments/globex").status_code == 404


# -- groups -----------------------------------------------------------------------------------


def test_custom_group_members_and_scopes(app, admin, storefront, introspect):
    r = admin.post("/scopes", json={"name": "invoice.invoice_read", "description": "See invoices"})
    assert r.status_code == 201
    ceiling = admin.get("/clients/storefront").json["scope"]
    r = admin.patch("/clients/storefront", json={"scope": ceiling + " invoice.invoice_read"})
    assert r.status_code == 200
    r = admin.post(
        "/groups",
        json={"name": "Accounting", "legal_entity_id": "acme", "scopes": ["invoice.invoice_read"]},
    )
    assert r.status_code == 201
    group = r.json
    assert group["code"] == "CUSTOM" and group["predefined"] is False
    assert group["scopes"] == ["invoice.invoice_read"]
    bob = customer_id(app, "bob@acme.test")
    r = admin.post(f"/groups/{group['id']}/members", json={"customer_id": bob})
    assert r.status_code == 201 and r.json["email"] == "bob@acme.test"
    assert (
        admin.post(f"/groups/{group['id']}/members", json={"customer_id": bob}).status_code == 409
    )
    members = admin.get(f"/groups/{group['id']}/members").json["items"]
    assert [m["customer_id"] for m in members] == [bob]
    login = storefront.login("bob@acme.test")
    assert "invoice.invoice_read" in login.json["scope"].split()

    # Changing the scopes stops bob's live token; his next refresh has the new scopes.
    r = admin.patch(
        f"/groups/{group['id']}",
        json={"scopes": ["order.order_read_le"], "name": "Accounts"},
        headers={"If-Match": '"1"'},
    )
    assert r.status_code == 200
    assert r.json["scopes"] == ["order.order_read_le"] and r.json["name"] == "Accounts"
    assert r.headers["ETag"] == '"2"'
    assert introspect(login.json["access_token"]) == INACTIVE
    refreshed = storefront.refresh(login.json["refresh_token"])
    scopes = refreshed.json["scope"].split()
    assert "order.order_read_le" in scopes and "invoice.invoice_read" not in scopes

    # Removing the member stops his token at once.
    assert admin.delete(f"/groups/{group['id']}/members/{bob}").status_code == 204
    assert introspect(refreshed.json["access_token"]) == INACTIVE
    assert admin.delete(f"/groups/{group['id']}/members/{bob}").status_code == 404
    assert admin.delete(f"/groups/{group['id']}").status_code == 204
    assert admin.get(f"/groups/{group['id']}").status_code == 404
    actions = [a for a, _, _ in audit_actions(app, target=group["id"])]
    assert actions == [
        "group.created",
        "group.member_added",
        "group.scopes_changed",
        "group.renamed",
        "group.member_removed",
        "group.deleted",
    ]


def test_group_rules(app, admin):
    bob = customer_id(app, "bob@acme.test")
    globex_buyers = group_id(app, "globex", "BUYER")
    r = admin.post(f"/groups/{globex_buyers}/members", json={"customer_id": bob})
    assert r.status_code == 409  # bob is not assigned to globex
    r = admin.post(f"/groups/{globex_buyers}/members", json={"customer_id": "nobody"})
    assert r.status_code == 404
    assert admin.delete(f"/groups/{globex_buyers}").status_code == 409  # predefined
    r = admin.post("/groups", json={"name": "X", "scopes": ["not.in_catalogue"]})
    assert r.status_code == 422 and "scopes" in r.json["fields"]
    r = admin.post("/groups", json={"name": "X", "scopes": ["Not A Scope"]})
    assert r.status_code == 422 and "scopes[0]" in r.json["fields"]
    r = admin.post("/groups", json={"name": "X", "legal_entity_id": "nowhere"})
    assert r.status_code == 404
    # A tenant-wide group, and the filters.
    r = admin.post("/groups", json={"name": "Everyone", "scopes": ["order.order_create"]})
    assert r.status_code == 201 and r.json["legal_entity_id"] is None
    tenant_wide = admin.get("/groups?tenant_wide=true").json["items"]
    assert [g["name"] for g in tenant_wide] == ["Everyone"]
    buyers = admin.all_items("/groups?code=BUYER", limit=2)
    assert len(buyers) == 3 and {g["code"] for g in buyers} == {"BUYER"}


def test_deleting_a_group_with_members_stops_their_tokens(app, admin, storefront, introspect):
    r = admin.post("/groups", json={"name": "Everyone", "scopes": ["order.order_create"]})
    group = r.json["id"]
    bob = customer_id(app, "bob@acme.test")
    assert admin.post(f"/groups/{group}/members", json={"customer_id": bob}).status_code == 201
    login = storefront.login("bob@acme.test")
    assert admin.delete(f"/groups/{group}").status_code == 204
    assert introspect(login.json["access_token"]) == INACTIVE


# -- scope catalogue --------------------------------------------------------------------------


def test_scope_catalogue(app, admin):
    names = [s["name"] for s in admin.all_items("/scopes", limit=50)]
    assert names == sorted(names) and "order.order_read_le" in names
    r = admin.post("/scopes", json={"name": "invoice.invoice_read", "description": "Read invoices"})
    assert r.status_code == 201
    assert r.json == {
        "name": "invoice.invoice_read",
        "description": "Read invoices",
        "predefined": False,
    }
    taken = {"name": "invoice.invoice_read", "description": "Read invoices"}
    assert admin.post("/scopes", json=taken).status_code == 409
    for bad in ("invoice", "Invoice.read", "invoice.read.all", "invoice._read", "1nvoice.read"):
        r = admin.post("/scopes", json={"name": bad, "description": "Bad"})
        assert r.status_code == 422, bad
    custom = admin.get("/scopes?predefined=false").json["items"]
    assert [s["name"] for s in custom] == ["invoice.invoice_read"]
    assert admin.get("/scopes/invoice.invoice_read").status_code == 200
    assert admin.get("/scopes/nope.nope").status_code == 404


# -- clients ----------------------------------------------------------------------------------


def test_client_secret_shown_once_and_rotated(app, client, admin):
    r = admin.post(
        "/clients",
        json={
            "client_id": "billing-service",
            "name": "Billing",
            "grant_types": ["client_credentials"],
            "scope": "token.introspect",
            "access_token_ttl": 120,
        },
    )
    assert r.status_code == 201
    secret = r.json["client_secret"]
    assert r.json["confidential"] is True and r.json["access_token_ttl"] == 120
    shown = admin.get("/clients/billing-service")
    assert "client_secret" not in shown.json and secret not in shown.get_data(as_text=True)
    token = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("billing-service", secret)
    )
    assert token.status_code == 200 and token.json["expires_in"] == 120
    r = admin.post(
        "/clients/billing-service/rotate-secret", headers={"If-Match": shown.headers["ETag"]}
    )
    assert r.status_code == 200
    new_secret = r.json["client_secret"]
    old = client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("billing-service", secret)
    )
    assert old.status_code == 401
    new = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("billing-service", new_secret),
    )
    assert new.status_code == 200
    assert [a for a, _, _ in audit_actions(app, target="billing-service")] == [
        "client.created",
        "client.secret_rotated",
    ]


def test_client_rules(app, admin):
    ttl_max = app.config["SETTINGS"].access_token_ttl_max
    base = {"client_id": "app", "grant_types": ["password", "refresh_token"]}
    cases = [
        ({**base, "confidential": False, "grant_types": ["client_credentials"]}, 422),
        ({**base, "scope": "no.such_scope"}, 422),
        ({**base, "access_token_ttl": ttl_max + 1}, 422),
        ({**base, "access_token_ttl": 0}, 422),
        ({**base, "grant_types": ["implicit"]}, 422),
        ({**base, "client_id": "has space"}, 422),
        ({**base, "client_id": "admin-cli"}, 409),
    ]
    for body, status in cases:
        assert admin.post("/clients", json=body).status_code == status, body
    r = admin.post("/clients", json={**base, "confidential": False, "first_party": True})
    assert r.status_code == 201 and r.json["client_secret"] is None
    assert admin.post("/clients/app/rotate-secret").status_code == 409  # public: no secret
    r = admin.patch(
        "/clients/app",
        json={"access_token_ttl": ttl_max, "audience": "shop-api", "scope": "order.order_create"},
    )
    assert r.status_code == 200
    assert (r.json["access_token_ttl"], r.json["audience"], r.json["scope"]) == (
        ttl_max,
        "shop-api",
        "order.order_create",
    )
    assert (
        admin.patch("/clients/app", json={"grant_types": ["client_credentials"]}).status_code == 422
    )
    assert admin.patch("/clients/app", json={"access_token_ttl": ttl_max + 1}).status_code == 422
    assert admin.delete("/clients/admin-cli").status_code == 409  # not itself
    assert [c["client_id"] for c in admin.all_items("/clients")] == [
        "admin-cli",
        "app",
        "order-service",
        "storefront",
    ]


def test_deleting_a_client_revokes_its_sessions(admin, storefront, introspect):
    login = storefront.login()
    assert admin.delete("/clients/storefront", headers={"If-Match": '"1"'}).status_code == 204
    assert introspect(login.json["access_token"]) == INACTIVE
    assert storefront.login().status_code == 401


# -- signing keys -----------------------------------------------------------------------------


def test_signing_keys_list_and_rotate(app, client, admin, isolated_keys):
    before = admin.get("/signing-keys").json["items"]
    assert before[0]["state"] == "signing"
    r = admin.post("/signing-keys/rotate")
    assert r.status_code == 201
    new = r.json
    assert new["state"] == "signing" and new["alg"] == app.config["SETTINGS"].signing_alg
    after = admin.get("/signing-keys").json["items"]
    assert after[0]["kid"] == new["kid"]
    assert after[1] == {**before[0], "state": "published"}
    published = {k["kid"] for k in client.get("/jwks.json").json["keys"]}
    assert {new["kid"], before[0]["kid"]} <= published
    # The old admin token still works (its key is still published); new tokens use the new key.
    assert admin.get("/signing-keys").status_code == 200
    fresh = Admin(client, "admin-cli", app.secrets["admin-cli"])
    header = fresh.token.split(".")[0]
    assert new["kid"] in base64.urlsafe_b64decode(header + "==").decode()
    assert ("signing_key.rotated", "client", "admin-cli") in audit_actions(app, target=new["kid"])


# -- sessions ---------------------------------------------------------------------------------


def test_sessions_list_and_revoke(app, admin, storefront, introspect):
    first = storefront.login()
    second = storefront.login(legal_entity_id="globex")
    alice = customer_id(app, "alice@acme.test")
    sessions = admin.get(f"/customers/{alice}/sessions").json["items"]
    assert len(sessions) == 2
    assert [s["legal_entity_id"] for s in sessions] == ["globex", "acme"]  # newest first
    assert all(s["client_id"] == "storefront" and not s["revoked"] for s in sessions)
    paged = admin.all_items(f"/customers/{alice}/sessions", limit=1)  # a date-time cursor
    assert [s["id"] for s in paged] == [s["id"] for s in sessions]
    newest = sessions[0]["id"]
    r = admin.delete(f"/customers/{alice}/sessions/{newest}")
    assert r.status_code == 200 and r.json["revoked"] is True
    assert r.json["revoked_reason"] == "revoked_by_admin"
    assert introspect(second.json["access_token"]) == INACTIVE
    assert introspect(first.json["access_token"])["active"] is True
    live = admin.get(f"/customers/{alice}/sessions?state=live").json["items"]
    assert [s["id"] for s in live] == [sessions[1]["id"]]
    r = admin.delete(f"/customers/{alice}/sessions")
    assert r.status_code == 200 and r.json == {"revoked": 1}
    assert introspect(first.json["access_token"]) == INACTIVE
    assert storefront.refresh(first.json["refresh_token"]).json["error"] == "invalid_grant"
    assert storefront.login().status_code == 200  # not blocked
    bob = customer_id(app, "bob@acme.test")
    assert admin.get(f"/customers/{bob}/sessions/{newest}").status_code == 404  # not bob's


# -- effective scopes -------------------------------------------------------------------------


def test_effective_scopes_match_what_a_login_gives(app, admin, storefront):
    alice = customer_id(app, "alice@acme.test")
    admin_group = group_id(app, "acme", "ADMIN")
    contact_group = group_id(app, "acme", "CONTACT")
    for entity in ("acme", "globex"):
        preview = admin.get(f"/customers/{alice}/effective-scopes?legal_entity_id={entity}")
        assert preview.status_code == 200
        login = storefront.login(legal_entity_id=entity)
        assert preview.json["scope"] == login.json["scope"], entity
        assert [s["scope"] for s in preview.json["scopes"]] == login.json["scope"].split()
    preview = admin.get(f"/customers/{alice}/effective-scopes?legal_entity_id=acme").json
    sources = {s["scope"]: s["sources"] for s in preview["scopes"]}
    assert sources["order.order_read_le"] == [admin_group]
    assert sources["customer.customerprofile_view"] == ["baseline"]
    assert sorted(sources["customermanagement.legalentity_read_own"]) == sorted(
        [admin_group, contact_group]
    )
    # No entity: the baseline only (no tenant-wide groups in the demo).
    none = admin.get(f"/customers/{alice}/effective-scopes").json
    assert all(s["sources"] == ["baseline"] for s in none["scopes"])
    # A client's ceiling caps it.
    capped = admin.get(
        f"/customers/{alice}/effective-scopes?legal_entity_id=acme&client_id=order-service"
    ).json
    assert capped["scope"] == "" and capped["scopes"] == []
    bob = customer_id(app, "bob@acme.test")
    r = admin.get(f"/customers/{bob}/effective-scopes?legal_entity_id=globex")
    assert r.status_code == 409 and "legal_entity_id" in r.json["fields"]
    r = admin.get(f"/customers/{alice}/effective-scopes?client_id=nope")
    assert r.status_code == 404


# -- audit events -----------------------------------------------------------------------------


def test_audit_events_filters(app, admin, storefront):
    storefront.login()
    storefront.login(password="wrong")
    admin.post("/legal-entities", json={"id": "x1", "name": "X1"})
    events = admin.all_items("/audit-events", limit=2)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)  # newest first
    failed = admin.get("/audit-events?action=login.failed").json["items"]
    assert len(failed) == 1 and failed[0]["actor_id"] == "storefront"
    mine = admin.get("/audit-events?actor_id=admin-cli").json["items"]
    assert [e["action"] for e in mine] == ["legal_entity.created"]
    alice = customer_id(app, "alice@acme.test")
    assert len(admin.get(f"/audit-events?customer_id={alice}").json["items"]) == 2
    at = events[0]["at"]
    assert admin.get(f"/audit-events?since={at}").json["items"][0]["id"] == events[0]["id"]
    assert admin.get(f"/audit-events?until={at}").json["items"][0]["id"] == events[1]["id"]
    assert admin.get("/audit-events?since=2000-01-01T00:00:00").json["items"]
    assert admin.get("/audit-events?until=2000-01-01T00:00:00Z").json["items"] == []
    assert admin.get("/audit-events?since=yesterday").status_code == 400
