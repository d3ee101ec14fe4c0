"""Faults with real servers: Redis stopped and started again, the line to PostgreSQL cut and
restored. The service answers clearly while a part is down, loses no session, and recovers
without a restart."""

from __future__ import annotations

import pytest
from conftest import Storefront, basic_auth, build_app, reset, settings_for
from faults import CuttableProxy, ThrowawayRedis

from token_service.extensions import db
from token_service.store import RedisStore

INACTIVE = {"active": False}


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
    # Refresh tokens live in the database: introspection still answers for them.
    assert introspect(refreshed.json["refresh_token"]).json["active"] is True
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
