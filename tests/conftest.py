"""Fixtures: every app-level test runs on both backends, the embedded default (SQLite file,
SQLite store beside it) and production's (PostgreSQL + Redis on 127.0.0.1). No mocks: each
backend is real, emptied and reloaded with the demo data before each test."""

from __future__ import annotations

import base64
import json
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import services
from frontdoor import Browser, register
from sqlalchemy import create_engine, text

from token_service import create_app
from token_service.clients import forget_client
from token_service.config import Settings
from token_service.database import upgrade
from token_service.demo import DEMO_PASSWORD, load_demo
from token_service.extensions import db
from token_service.keys import KeyRing
from token_service.kv import MemoryStore, RedisStore, SqliteStore, embedded_store_path

# PostgreSQL and Redis of the "postgres" backend: those at TEST_POSTGRES_URL / TEST_REDIS_URL,
# or, when none answers there, throwaway ones started now for this run and stopped after it
# (tests/services.py). Before anything reads the variables: xdist's workers inherit them.
SERVICES = services.arrange(os.environ)
PG_ADMIN_URL = services.postgres_url(os.environ)
REDIS_URL = services.redis_url(os.environ)
BACKENDS = ["embedded", "postgres"]


def pytest_sessionstart(session) -> None:
    """Say which throwaway servers this run uses (even under -q)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in SERVICES.lines:
        if reporter is not None:
            reporter.write_line(line)


def pytest_unconfigure(config) -> None:
    SERVICES.stop()  # the throwaway servers, if this process started any


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    KeyRing(path, 3660).generate("RS256")
    return path


@pytest.fixture(scope="session")
def pg_database():
    """A throwaway PostgreSQL database for this test run, dropped at the end."""
    name = f"ts_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def settings_for(database_url: str, redis_url: str | None, keys_dir: Path) -> Settings:
    """Default settings on these backends, with the test issuer."""
    return replace(
        Settings.from_env({}),
        database_url=database_url,
        redis_url=redis_url,
        issuer="http://issuer.test",
        keys_dir=keys_dir,
    )


def _settings(backend: str, keys_dir: Path, tmp_path_factory, request) -> Settings:
    if backend == "postgres":
        return settings_for(request.getfixturevalue("pg_database"), REDIS_URL, keys_dir)
    database_url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    return settings_for(database_url, None, keys_dir)


def build_app(settings: Settings):
    """An app on `settings`, its schema migrated, its store private to this test run."""
    store = (
        SqliteStore(embedded_store_path(settings.database_url, "instance"))
        if settings.redis_url is None
        else RedisStore(settings.redis_url, prefix=f"ts-test:{os.getpid()}:{uuid.uuid4().hex[:6]}:")
    )
    app = create_app({"SETTINGS": settings, "STORE": store, "TESTING": True})
    with app.app_context():
        upgrade(db.engine)
    return app


@pytest.fixture(params=["memory", "store-file", "redis"])
def kv_store(request, tmp_path):
    """The shared key-value store (token_service/kv) on each of its backends, empty: the ports'
    contract suites run against every implementation through it."""
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "store-file":
        store = SqliteStore(tmp_path / "x.store.sqlite3")
    else:
        store = RedisStore(REDIS_URL, prefix=f"ts-test:{os.getpid()}:{uuid.uuid4().hex[:6]}:")
    yield store
    store.flush()


@pytest.fixture(scope="session", params=BACKENDS)
def base_app(request, keys_dir, tmp_path_factory):
    app = build_app(_settings(request.param, keys_dir, tmp_path_factory, request))
    app.backend = request.param
    yield app
    with app.app_context():
        db.engine.dispose()


def forget_deny_list(app) -> None:
    """What a restart of Redis does to a worker: its subscription breaks, so its copy of the
    deny-list is dropped (see revocation.DenyList)."""
    subscription = app.extensions["deny_list"].subscription
    if subscription is not None:
        subscription.close()


def reset(app) -> dict[str, str]:
    """Empty every table and the store, reload the demo data; returns the client secrets."""
    with app.app_context():
        tables = [t.name for t in reversed(db.metadata.sorted_tables)]
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            db.session.execute(text("PRAGMA defer_foreign_keys = ON"))
            for table in tables:
                db.session.execute(text(f"DELETE FROM {table}"))
        db.session.commit()
        app.extensions["token_store"].flush()
        forget_deny_list(app)
        forget_client()
        secrets = load_demo()
        db.session.commit()
    return secrets


@pytest.fixture
def app(base_app):
    base_app.secrets = reset(base_app)
    return base_app


@pytest.fixture
def client(app):
    return app.test_client()


class Storefront:
    """Action helpers for the storefront's calls to the token endpoint."""

    def __init__(self, client) -> None:
        self.client = client

    def token(self, **params):
        params.setdefault("client_id", "storefront")
        return self.client.post("/oauth/token", data=params)

    def login(self, username="alice@acme.test", password=DEMO_PASSWORD, **params):
        return self.token(grant_type="password", username=username, password=password, **params)

    def refresh(self, refresh_token, **params):
        return self.token(grant_type="refresh_token", refresh_token=refresh_token, **params)


@pytest.fixture
def shop(app):
    """The app with `web-shop`, a first-party code-flow client (tests/frontdoor.py)."""
    register(app)
    return app


@pytest.fixture
def browser(client) -> Browser:
    """The test client as a browser on the hosted pages."""
    return Browser(client)


@pytest.fixture
def storefront(client) -> Storefront:
    return Storefront(client)


def basic_auth(client_id: str, secret: str) -> dict:
    """An `Authorization: Basic` header (RFC 7617) for a client."""
    raw = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@pytest.fixture
def introspect(app, client):
    """Introspect a token as order-service (which holds token.introspect); returns the JSON."""
    headers = basic_auth("order-service", app.secrets["order-service"])

    def call(token: str, **extra) -> dict:
        r = client.post("/oauth/introspect", data={"token": token, **extra}, headers=headers)
        assert r.status_code == 200, r.get_data(as_text=True)
        assert r.headers["Cache-Control"] == "no-store"
        return r.json

    return call


def claims_of(token: str) -> dict:
    """The payload of one of our JWTs, unverified (the service signed it)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def deny_listed(app, token: str) -> bool:
    """What the resource kit's online check reads: the raw deny-list entries in the store."""
    claims = claims_of(token)
    store = app.extensions["token_store"]
    if store.get(f"deny:jti:{claims['jti']}") is not None:
        return True
    not_before = store.get(f"deny:sid:{claims['sid']}")
    return not_before is not None and claims["iat"] < int(not_before)


@pytest.fixture
def isolated_keys(app, tmp_path, monkeypatch):
    """A private copy of the keys directory, so that rotating keys leaves other tests alone."""
    shared = app.extensions["keyring"]
    for path in shared.keys_dir.glob("*.pem"):
        shutil.copy2(path, tmp_path / path.name)
    ring = KeyRing(tmp_path, shared.retention_seconds)
    monkeypatch.setitem(app.extensions, "keyring", ring)
    monkeypatch.setattr(app.extensions["token_endpoint"], "keyring", ring)
    monkeypatch.setattr(app.extensions["introspection"], "keyring", ring)
    return ring
