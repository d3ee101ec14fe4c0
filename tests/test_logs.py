"""Logs: one JSON line per request with its id, route, status, duration, client, customer hash
and legal entity; every other line JSON too; and no token, code, password or secret in any
line, errors and tracebacks included (issue 14)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from datetime import timedelta

import pytest
from conftest import basic_auth

from token_service import logs
from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.models import RefreshToken, utcnow
from token_service.services import customers


class Captured:
    """What the service logged since the fixture started: raw text and parsed JSON lines."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def requests(self, **match) -> list[dict]:
        return [
            line
            for line in self.lines()
            if line["event"] == "request" and all(line.get(k) == v for k, v in match.items())
        ]


@pytest.fixture
def captured(app):
    stream = io.StringIO()
    logs.configure("json", "INFO", stream=stream)
    yield Captured(stream)
    settings = app.config["SETTINGS"]
    logs.configure(settings.log_format, settings.log_level)


def sha16(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


# -- the request line --------------------------------------------------------------------------


def test_one_line_per_request_with_its_fields(captured, storefront):
    r = storefront.login(legal_entity_id="globex")
    assert r.status_code == 200
    (line,) = captured.requests(route="/oauth/token")
    assert line["request_id"] == r.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert line["duration_ms"] > 0
    assert line["grant_type"] == "password"
    assert line["client_id"] == "storefront"
    assert line["customer"] == sha16("cus_alice")
    assert line["legal_entity_id"] == "globex"
    assert line["level"] == "info" and line["logger"] == "token_service.request"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert "error" not in line


def test_a_refresh_switch_names_the_new_entity(captured, storefront):
    login = storefront.login()
    storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    refreshed = captured.requests(grant_type="refresh_token")[0]
    assert (refreshed["legal_entity_id"], refreshed["customer"]) == ("globex", sha16("cus_alice"))


def test_the_caller_request_id_is_kept_and_returned(captured, client):
    r = client.get("/healthz", headers={"X-Request-Id": "storefront-7f3a9c21"})
    assert r.headers["X-Request-Id"] == "storefront-7f3a9c21"
    r = client.post("/oauth/token", headers={"X-Request-Id": "storefront-7f3a9c22"}, data={})
    assert r.headers["X-Request-Id"] == "storefront-7f3a9c22"
    (line,) = captured.requests(request_id="storefront-7f3a9c22")
    assert (line["status"], line["error"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    "header", ["short", "x" * 129, "two words", 'quote"inside-id', "ünï-cödé-1"]
)
def test_an_implausible_request_id_is_replaced(captured, client, header):
    r = client.get("/jwks.json", headers={"X-Request-Id": header})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])
    assert header not in captured.text


def test_flask_routes_log_their_rule_not_their_path(app, captured, client):
    auth = basic_auth("admin-cli", app.secrets["admin-cli"])
    r = client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=auth)
    admin = {"Authorization": f"Bearer {r.json['access_token']}"}
    assert client.get("/admin/customers/cus_alice", headers=admin).status_code == 200
    assert client.get("/admin/customers/cus_nobody", headers=admin).status_code == 404
    found, missing = captured.requests(route="/admin/customers/<customer_id>")
    assert (found["status"], missing["status"], missing["error"]) == (200, 404, "not_found")
    assert found["client_id"] == missing["client_id"] == "admin-cli"
    assert "cus_nobody" not in captured.text


def test_other_lines_carry_the_request_id(app, captured, client, monkeypatch):
    def broken(request):
        logging.getLogger("token_service.test").warning("something odd")
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.extensions["token_endpoint"], "handle", broken)
    r = client.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 500
    odd, bug, request = captured.lines()[-3:]
    assert odd["event"] == "something odd" and odd["logger"] == "token_service.test"
    assert bug["level"] == "error" and "RuntimeError: a bug" in bug["exception"]
    assert request["event"] == "request" and request["level"] == "error"
    assert odd["request_id"] == bug["request_id"] == request["request_id"]
    assert request["request_id"] == r.headers["X-Request-Id"]


def test_probes_are_quiet_when_they_succeed(captured, client):
    client.get("/healthz")
    client.get("/readyz")
    assert captured.requests() == []


def test_console_format_for_a_person(app, client):
    stream = io.StringIO()
    logs.configure("console", "INFO", stream=stream)
    try:
        client.get("/jwks.json")
    finally:
        settings = app.config["SETTINGS"]
        logs.configure(settings.log_format, settings.log_level)
    (line,) = stream.getvalue().splitlines()
    assert "request" in line and "route=/jwks.json" in line and "status=200" in line
    assert not line.startswith("{")


# -- no secret in any line ---------------------------------------------------------------------


def test_no_token_code_password_or_secret_reaches_a_log_line(
    app, captured, client, storefront, monkeypatch
):
    """A day in the life, errors included; then every secret that crossed the wire is looked
    for in everything logged."""
    secrets = {DEMO_PASSWORD, *app.secrets.values()}
    order_service = basic_auth("order-service", app.secrets["order-service"])
    admin_cli = basic_auth("admin-cli", app.secrets["admin-cli"])
    secrets |= {order_service["Authorization"].split()[1], admin_cli["Authorization"].split()[1]}

    def keep(response) -> dict:
        body = response.json or {}
        secrets.update(body[k] for k in ("access_token", "refresh_token") if body.get(k))
        return body

    login = keep(storefront.login(legal_entity_id="acme"))
    switched = keep(storefront.refresh(login["refresh_token"], legal_entity_id="globex"))
    keep(storefront.refresh(login["refresh_token"], legal_entity_id="globex"))  # grace replay
    storefront.refresh(switched["refresh_token"], legal_entity_id="acme-logistics")  # refused
    storefront.login(password="not the password at all")
    secrets.add("not the password at all")
    with app.app_context():  # the first refresh token, replayed after the grace window
        db.session.execute(
            db.update(RefreshToken)
            .where(RefreshToken.consumed_at.is_not(None))
            .values(consumed_at=utcnow() - timedelta(seconds=60))
        )
        db.session.commit()
    storefront.refresh(login["refresh_token"])
    service = keep(
        client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=admin_cli)
    )
    client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "order-service",
            "client_secret": app.secrets["order-service"],
        },
    )
    client.post("/oauth/token", data={"grant_type": "client_credentials", "code": "a-code-42"})
    secrets.add("a-code-42")
    for token in (login["access_token"], switched["refresh_token"], "eyJnot.a.jwt"):
        client.post("/oauth/introspect", data={"token": token}, headers=order_service)
    client.post("/oauth/revoke", data={"token": switched["access_token"]}, headers=order_service)
    admin = {"Authorization": f"Bearer {service['access_token']}"}
    created = client.post(
        "/admin/customers",
        json={"email": "carol@acme.test", "password": "carol's own passphrase"},
        headers=admin,
    )
    assert created.status_code in (200, 201), created.json
    secrets.add("carol's own passphrase")
    made = client.post(
        "/admin/clients",
        json={"client_id": "reporting", "grant_types": ["client_credentials"], "scope": ""},
        headers=admin,
    )
    if made.status_code in (200, 201) and made.json.get("client_secret"):
        secrets.add(made.json["client_secret"])
    client.get("/admin/customers", headers={"Authorization": "Bearer " + login["access_token"]})

    # Errors whose messages quote the secrets, on the front and in Flask: scrubbed.
    def leaky_front(request):
        logging.getLogger("token_service.test").error(
            "about to fail for %s / %s", request.get("password"), request.authorization
        )
        raise ValueError(f"bad {request.get('refresh_token')} and {request.get('password')}")

    endpoint = app.extensions["token_endpoint"]
    original = endpoint.handle
    endpoint.handle = leaky_front
    try:
        r = client.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": switched["refresh_token"],
                "password": "hunter2-hunter2",
            },
            headers=order_service,
        )
    finally:
        endpoint.handle = original
    assert r.status_code == 500
    secrets.add("hunter2-hunter2")

    def leaky_directory(email, password, **_):
        logging.getLogger("token_service.test").warning("creating %s with %s", email, password)
        raise RuntimeError(f"cannot create {email}: {password!r} rejected")

    monkeypatch.setattr(customers, "create_customer", leaky_directory)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)  # a 500, as when deployed
    leaky = client.post(
        "/admin/customers",
        json={"email": "dave@acme.test", "password": "dave's secret words"},
        headers=admin,
    )
    assert leaky.status_code == 500
    secrets.add("dave's secret words")
    assert "creating dave@acme.test with" in captured.text
    logging.getLogger("token_service.test").error(
        "outside any request: Authorization: Bearer %s", service["access_token"]
    )

    text = captured.text
    assert len(captured.requests()) >= 15
    assert "about to fail" in text and "ValueError" in text and logs.REDACTED in text
    leaked = sorted(s for s in secrets if s and s in text)
    assert leaked == [], f"secrets in the logs: {leaked}"
    assert not re.search(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.", text), "a JWT in the logs"


def test_a_request_id_that_is_one_of_the_callers_secrets_is_not_logged(captured, client):
    secret = "s3cret-of-the-caller-1234"
    client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "x", "client_secret": secret},
        headers={"X-Request-Id": secret},
    )
    assert secret not in captured.text
    (line,) = captured.requests(route="/oauth/token")
    assert line["request_id"] == logs.REDACTED


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Basic b3JkZXItc2VydmljZTpzM2NyZXQ=",
        "header bearer abc.def-ghi",
        "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl in a message",
    ],
)
def test_scrub_removes_credentials_and_jwts(text):
    cleaned = logs.scrub(text, [])
    assert logs.REDACTED in cleaned
    for part in ("b3JkZXItc2VydmljZTpzM2NyZXQ", "abc.def-ghi", "c2lnbmF0dXJl"):
        assert part not in cleaned
