"""Faults with real servers: Redis stopped and started again, the line to PostgreSQL cut and
restored. The service answers clearly while a part is down, loses no session, and recovers
without a restart."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import Storefront, basic_auth, build_app, reset, settings_for
from faults import CuttableProxy, ThrowawayRedis

from token_service.extensions import db
from token_service.kv import RedisStore
from token_service.models import Session
from token_service.revocation import deny_session
from token_service.services import groups

INACTIVE = {"active": False}


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def redis_server(tmp_path):
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_app(pg_database, redis_server, keys_dir):
    app = build_app(settings_for(pg_database, redis_server.url, keys_dir))
    assert isinstance(app.extensions["token_store"], RedisStore)
    app.secrets = reset(app)
    yield app
    with app.app_context():
        db.engine.dispose()


def test_redis_down_and_back(redis_app, redis_server):
    client = redis_app.test_client()
    storefront = Storefront(client)
    order_service = basic_auth("order-service", redis_app.secrets["order-service"])

    def introspect(token):
        return client.post("/oauth/introspect", data={"token": token}, headers=order_service)

    login = storefront.login()
    assert introspect(login.json["access_token"]).json["active"] is True

    redis_server.stop()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"] == {"database": "ok", "store": "unavailable", "signing_key": "ok"}
    assert client.get("/healthz").status_code == 200
    # Logins and refreshes go on (throttling and grace replay are off, and logged).
    assert storefront.login("bob@acme.test").status_code == 200
    refreshed = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert refreshed.status_code == 200
    # Introspection never calls a possibly deny-listed access token active: it says it cannot tell.
    down = introspect(refreshed.json["access_token"])
    assert down.status_code == 503
    assert down.json["error"] == "temporarily_unavailable"
    assert down.headers["Retry-After"]
    # Refresh tokens live in the database: introspection still answers for them (to their own
    # client only; to a resource server, as to anyone else, they are inactive).
    assert introspect(refreshed.json["refresh_token"]).json == INACTIVE
    # Revoking an access token needs the deny-list: refused clearly, nothing half done.
    r = client.post(
        "/oauth/revoke",
        data={"token": refreshed.json["access_token"], "client_id": "storefront"},
    )
    assert r.status_code == 503
    # Revoking a refresh token works: the session row is the source of truth.
    revoked = storefront.login()
    r = client.post(
        "/oauth/revoke", data={"token": revoked.json["refresh_token"], "client_id": "storefront"}
    )
    assert r.status_code == 200

    redis_server.start()  # same port, empty: the deny-list entries written while down are lost
    assert client.get("/readyz").status_code == 200
    assert introspect(refreshed.json["access_token"]).json["active"] is True
    # The revoked session's access token is inactive all the same (checked in the database).
    assert introspect(revoked.json["access_token"]).json == INACTIVE
    assert storefront.refresh(revoked.json["refresh_token"]).json["error"] == "invalid_grant"
    # No session lost: the chain continues.
    assert storefront.refresh(refreshed.json["refresh_token"]).status_code == 200


def test_admin_api_works_while_redis_is_down(redis_app, redis_server):
    """Reads need no Redis; changes commit to the database, and the deny-list entries they
    could not write are queued (the answer says so) and written once Redis is back."""
    client = redis_app.test_client()
    storefront = Storefront(client)
    secret = redis_app.secrets["admin-cli"]

    def admin_token() -> str:
        data = {"grant_type": "client_credentials"}
        return client.post("/oauth/token", data=data, auth=("admin-cli", secret)).json[
            "access_token"
        ]

    token, revoked_token = admin_token(), admin_token()
    auth = {"Authorization": f"Bearer {token}"}
    r = client.post("/oauth/revoke", data={"token": revoked_token}, auth=("admin-cli", secret))
    assert r.status_code == 200
    alice = storefront.login()
    bob = storefront.login("bob@acme.test")
    with redis_app.app_context():
        group = groups.group_of("acme", "ADMIN").id

    redis_server.stop()
    for path in ("/admin/customers", "/admin/audit-events", "/admin/customers/cus_alice/sessions"):
        r = client.get(path, headers=auth)
        assert r.status_code == 200, (path, r.get_data(as_text=True))
        assert "Deny-List" not in r.headers
    # A token revoked before the outage stays revoked: the database has its revocation.
    r = client.get("/admin/customers", headers={"Authorization": f"Bearer {revoked_token}"})
    assert r.status_code == 401
    r = client.delete(f"/admin/groups/{group}/members/cus_alice", headers=auth)
    assert r.status_code == 204, r.get_data(as_text=True)
    assert r.headers["Deny-List"] == "queued"
    r = client.post("/admin/customers/cus_bob/block", headers=auth)
    assert r.status_code == 200 and r.json["status"] == "blocked"
    assert r.headers["Deny-List"] == "queued"
    # Committed: the refresh and the login see it at once.
    assert storefront.refresh(bob.json["refresh_token"]).json["error"] == "invalid_grant"
    refreshed = storefront.refresh(alice.json["refresh_token"])
    assert refreshed.status_code == 200
    assert "order.order_read_le" not in refreshed.json["scope"].split()
    outbox = redis_app.extensions["deny_list_outbox"]
    assert outbox.flush() == 2  # still down: kept

    redis_server.start()  # empty: only the queue can bring the entries back
    outbox.flush()
    assert len(outbox) == 0
    store = redis_app.extensions["token_store"]
    for login in (alice, bob):
        claims = jwt_claims(login.json["access_token"])
        assert int(store.get(f"deny:sid:{claims['sid']}")) > claims["iat"]
    order_service = basic_auth("order-service", redis_app.secrets["order-service"])
    for login in (alice, bob):
        r = client.post(
            "/oauth/introspect", data={"token": login.json["access_token"]}, headers=order_service
        )
        assert r.json == INACTIVE
    assert client.get("/admin/customers", headers=auth).status_code == 200


def test_queued_entry_never_overwrites_a_newer_one(redis_app, redis_server):
    client = redis_app.test_client()
    login = Storefront(client).login()
    sid = jwt_claims(login.json["access_token"])["sid"]
    with redis_app.app_context():
        session = db.session.get(Session, sid)
        redis_server.stop()
        deny_session(session, "test")  # queued
        redis_server.start()
        store = redis_app.extensions["token_store"]
        store.set(f"deny:sid:{sid}", str(session.tokens_not_before + 5).encode(), 60)
        outbox = redis_app.extensions["deny_list_outbox"]
        assert outbox.flush() == 0
        assert int(store.get(f"deny:sid:{sid}")) == session.tokens_not_before + 5
        db.session.rollback()


@pytest.fixture
def proxied_app(pg_database, keys_dir):
    from sqlalchemy.engine import make_url

    url = make_url(pg_database)
    proxy = CuttableProxy(url.host, url.port or 5432)
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app = build_app(settings_for(proxied, None, keys_dir))
    app.secrets = reset(app)
    yield app, proxy
    proxy.close()
    with app.app_context():
        db.engine.dispose()


def test_database_connection_lost_and_back(proxied_app):
    app, proxy = proxied_app
    client = app.test_client()
    storefront = Storefront(client)
    login = storefront.login()
    token = login.json["refresh_token"]

    proxy.cut()
    for response in (
        storefront.refresh(token, legal_entity_id="globex"),
        storefront.login("bob@acme.test"),
    ):
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"] == "temporarily_unavailable"
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200

    proxy.restore()
    # Nothing was half-rotated: the same refresh token works, without a restart.
    switched = storefront.refresh(token, legal_entity_id="globex")
    assert switched.status_code == 200, switched.json
    assert switched.json["legal_entity_id"] == "globex"
    assert storefront.refresh(switched.json["refresh_token"]).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_database_cut_mid_session_keeps_refresh_token(proxied_app):
    """Cut between requests of a chain, many times: every token is either rotated (200) or
    still valid (503), never lost."""
    app, proxy = proxied_app
    storefront = Storefront(app.test_client())
    token = storefront.login().json["refresh_token"]
    for i in range(6):
        if i % 2:
            proxy.cut()
        r = storefront.refresh(token, legal_entity_id=["acme", "globex"][i % 2])
        proxy.restore()
        if r.status_code == 200:
            token = r.json["refresh_token"]
        else:
            assert r.status_code == 503
    assert storefront.refresh(token).status_code == 200
