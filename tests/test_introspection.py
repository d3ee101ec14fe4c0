"""Introspection (RFC 7662) and revocation (RFC 7009): live answers, revocations show at once."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid

import pytest
from conftest import REDIS_URL, Storefront, basic_auth, forget_deny_list
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from token_service import create_app
from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.kv import REVOCATION_CHANNEL, RedisStore
from token_service.models import Client
from token_service.oauth2.introspect import SESSION_STATE_SECONDS
from token_service.services import clients, customers, groups, legal_entities

INACTIVE = {"active": False}


@pytest.fixture
def revoke(client):
    def call(token: str, client_id: str = "storefront", **extra):
        r = client.post("/oauth/revoke", data={"token": token, "client_id": client_id, **extra})
        assert r.status_code == 200, r.get_data(as_text=True)
        return r

    return call


def test_active_access_token(introspect, storefront):
    login = storefront.login()
    answer = introspect(login.json["access_token"])
    assert answer["active"] is True
    assert answer["token_type"] == "Bearer"
    assert answer["scope"] == login.json["scope"]
    assert answer["client_id"] == "storefront"
    assert answer["legal_entity_id"] == "acme"
    assert answer["iss"] == "http://issuer.test"
    assert answer["aud"] == "commerce-api"
    assert {"sub", "exp", "iat", "jti", "sid"} <= set(answer)


@pytest.fixture
def web_shop(app, client):
    """A confidential first-party client (a storefront's back end) that may introspect: the
    one kind of caller that is told about its own refresh tokens."""
    with app.app_context():
        _, secret = clients.create_client(
            "web-shop",
            confidential=True,
            grant_types=["password", "refresh_token"],
            scope=db.session.get(Client, "storefront").scope + " token.introspect",
            first_party=True,
        )
        db.session.commit()
    auth = basic_auth("web-shop", secret)

    class WebShop:
        def login(self, username="alice@acme.test", **params):
            data = {"grant_type": "password", "username": username, "password": DEMO_PASSWORD}
            return client.post("/oauth/token", data={**data, **params}, headers=auth)

        def refresh(self, token, **params):
            data = {"grant_type": "refresh_token", "refresh_token": token, **params}
            return client.post("/oauth/token", data=data, headers=auth)

        def introspect(self, token, **params):
            r = client.post("/oauth/introspect", data={"token": token, **params}, headers=auth)
            assert r.status_code == 200, r.get_data(as_text=True)
            assert r.headers["Cache-Control"] == "no-store"
            return r.json

    return WebShop()


def test_active_refresh_token(web_shop):
    login = web_shop.login()
    token = login.json["refresh_token"]
    answer = web_shop.introspect(token, token_type_hint="refresh_token")
    assert answer["active"] is True
    assert answer["token_type"] == "refresh_token"
    assert answer["legal_entity_id"] == "acme"
    assert answer["client_id"] == "web-shop" and answer["sub"] == "cus_alice"
    assert answer["scope"] == login.json["scope"]
    # DESIGN §4 lists aud and jti for every active answer.
    assert answer["aud"] == answer["iss"] == "http://issuer.test"
    assert len(answer["jti"]) == 32 and answer["jti"] == web_shop.introspect(token)["jti"]
    # Rotated: the old one is no longer active; its successor has a name of its own.
    successor = web_shop.refresh(token).json["refresh_token"]
    assert web_shop.introspect(token) == INACTIVE
    assert web_shop.introspect(successor)["jti"] != answer["jti"]


def test_refresh_token_is_inactive_to_other_clients(introspect, storefront, web_shop):
    """A resource server that introspects a refresh token learns nothing: were it told the
    session's ceiling, bob's refresh token would read all of acme's orders (issue 15 #5)."""
    bob = storefront.login("bob@acme.test")
    assert "order.order_read_le" not in bob.json["scope"]
    assert introspect(bob.json["refresh_token"]) == INACTIVE
    assert introspect(bob.json["refresh_token"], token_type_hint="refresh_token") == INACTIVE
    assert introspect(web_shop.login().json["refresh_token"]) == INACTIVE


def test_refresh_token_scope_is_what_the_customer_holds_now(app, web_shop):
    """Never the ceiling, never scopes the customer lost since: the scope of its next refresh."""
    bob = web_shop.login("bob@acme.test")
    answer = web_shop.introspect(bob.json["refresh_token"])
    assert answer["scope"] == bob.json["scope"]
    assert not {"order.order_read_le", "iam.assignment_create_own"} & set(answer["scope"].split())
    alice = web_shop.login()
    assert "order.order_read_le" in web_shop.introspect(alice.json["refresh_token"])["scope"]
    with app.app_context():
        group = groups.group_of("acme", "ADMIN").id
        groups.remove_membership(group, "cus_alice", actor=("client", "admin-cli"))
        db.session.commit()
    now = web_shop.introspect(alice.json["refresh_token"])
    assert now["active"] is True and "order.order_read_le" not in now["scope"].split()
    assert now["scope"] == web_shop.refresh(alice.json["refresh_token"]).json["scope"]


@pytest.mark.parametrize(
    "change",
    [
        lambda: customers.block_customer("cus_alice", actor=("client", "admin-cli")),
        lambda: legal_entities.remove_assignment(
            "cus_alice", "acme", actor=("client", "admin-cli")
        ),
    ],
    ids=["blocked", "unassigned"],
)
def test_refresh_token_dies_with_its_customer_or_entity(app, web_shop, change):
    """What test_lifecycle checks through order-service (now told nothing of refresh tokens),
    checked through the owning client, which is told."""
    token = web_shop.login().json["refresh_token"]
    assert web_shop.introspect(token)["active"] is True
    with app.app_context():
        change()
        db.session.commit()
    assert web_shop.introspect(token) == INACTIVE


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.",
        "x" * 3000,
    ],
)
def test_junk_is_inactive(introspect, token):
    assert introspect(token) == INACTIVE


def test_client_credentials_token_is_active(app, client, introspect):
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth("admin-cli", app.secrets["admin-cli"]),
    )
    answer = introspect(r.json["access_token"])
    assert answer["active"] is True
    assert answer["sub"] == "admin-cli"
    assert answer["sid"] is None


def test_introspection_needs_the_right(app, client, storefront):
    token = storefront.login().json["access_token"]
    no_auth = client.post("/oauth/introspect", data={"token": token})
    assert no_auth.status_code == 401
    public = client.post("/oauth/introspect", data={"token": token, "client_id": "storefront"})
    assert public.status_code == 403
    admin = client.post(
        "/oauth/introspect",
        data={"token": token},
        headers=basic_auth("admin-cli", app.secrets["admin-cli"]),
    )
    assert admin.status_code == 403
    assert admin.json["error"] == "insufficient_scope"


def test_revoking_refresh_token_ends_session_and_its_access_tokens(
    app, introspect, revoke, storefront
):
    login = storefront.login()
    second = storefront.refresh(login.json["refresh_token"])
    revoke(second.json["refresh_token"])
    assert introspect(login.json["access_token"]) == INACTIVE
    assert introspect(second.json["access_token"]) == INACTIVE
    assert introspect(second.json["refresh_token"]) == INACTIVE
    assert storefront.refresh(second.json["refresh_token"]).json["error"] == "invalid_grant"


def test_revoking_access_token_denies_only_it(introspect, revoke, storefront):
    login = storefront.login()
    revoke(login.json["access_token"], token_type_hint="access_token")
    assert introspect(login.json["access_token"]) == INACTIVE
    refreshed = storefront.refresh(login.json["refresh_token"])
    assert introspect(refreshed.json["access_token"])["active"] is True


def test_revocation_is_published(app, revoke, storefront):
    store = app.extensions["token_store"]
    if app.backend == "postgres":
        pubsub = store._redis.pubsub()
        pubsub.subscribe(REVOCATION_CHANNEL)
        pubsub.get_message(timeout=1)  # the subscription confirmation
    login = storefront.login()
    revoke(login.json["refresh_token"])
    if app.backend == "postgres":
        message = pubsub.get_message(timeout=2)
        pubsub.close()
        payload = json.loads(message["data"])
    else:
        payload = json.loads(store.published[-1][1])
    sid = json.loads(base64.urlsafe_b64decode(login.json["access_token"].split(".")[1] + "=="))[
        "sid"
    ]
    assert payload["type"] == "sid"
    assert payload["value"] == sid
    assert payload["reason"] == "revoked_by_client"
    assert payload["not_before"] <= payload["exp"]


def test_unknown_and_foreign_tokens_revoke_nothing(app, revoke, storefront, web_shop):
    login = web_shop.login()
    revoke("no-such-token")
    # Another client cannot revoke web-shop's tokens; the answer does not tell.
    for other in (
        basic_auth("order-service", app.secrets["order-service"]),
        {},  # the storefront, a public client
    ):
        data = {"token": login.json["refresh_token"]}
        if not other:
            data["client_id"] = "storefront"
        r = app.test_client().post("/oauth/revoke", data=data, headers=other)
        assert r.status_code == 200
    assert web_shop.introspect(login.json["refresh_token"])["active"] is True


def test_revoke_needs_client_authentication(client, storefront):
    login = storefront.login()
    r = client.post("/oauth/revoke", data={"token": login.json["refresh_token"]})
    assert r.status_code == 401
    assert r.json["error"] == "invalid_client"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def test_forged_tokens_are_inactive(app, client, introspect, storefront):
    import hashlib
    import hmac
    import time

    real = storefront.login().json["access_token"]
    header = json.loads(base64.urlsafe_b64decode(real.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(real.split(".")[1] + "=="))
    jwk = client.get("/jwks.json").json["keys"][0]
    public_pem = (
        app.extensions["keyring"]
        .current.private_key.public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )

    def hs256(h, c, secret):
        unsigned = _forge(h, c).rsplit(".", 1)[0]
        return unsigned + "." + _b64(hmac.new(secret, unsigned.encode(), hashlib.sha256).digest())

    real_sig = base64.urlsafe_b64decode(real.split(".")[2] + "==")
    forged = {
        "alg none": _forge({**header, "alg": "none"}, claims),
        "HS256 with the public key": hs256({**header, "alg": "HS256"}, claims, public_pem),
        "HS256 with the JWK n": hs256({**header, "alg": "HS256"}, claims, jwk["n"].encode()),
        "unknown kid": _forge({**header, "kid": "nope"}, claims, real_sig),
        "wrong typ": _forge({**header, "typ": "JWT"}, claims, real_sig),
        "missing typ": _forge({k: v for k, v in header.items() if k != "typ"}, claims, real_sig),
        "tampered scope": _forge(header, {**claims, "scope": "admin.manage"}, real_sig),
        "tampered entity": _forge(header, {**claims, "legal_entity_id": "globex"}, real_sig),
    }
    for name, token in forged.items():
        assert introspect(token) == INACTIVE, name
    key = app.extensions["keyring"].current
    now = int(time.time())
    expired = key.encode_jwt({**claims, "exp": now - 1, "iat": now - 301})
    other_issuer = key.encode_jwt({**claims, "iss": "http://evil.test"})
    assert introspect(expired) == INACTIVE
    assert introspect(other_issuer) == INACTIVE
    assert introspect(real)["active"] is True


def test_database_backstop_when_the_store_lost_the_deny_list(app, introspect, revoke, storefront):
    """The deny-list shows a revocation at once; if the store lost it, the database still does,
    after at most SESSION_STATE_SECONDS (its answer is briefly kept per worker)."""
    login = storefront.login()
    access = login.json["access_token"]
    assert introspect(access)["active"] is True  # the session's state is now kept
    revoke(login.json["refresh_token"])
    assert introspect(access) == INACTIVE  # the deny-list
    app.extensions["token_store"].flush()  # ...is lost (Redis restarted)
    forget_deny_list(app)
    time.sleep(SESSION_STATE_SECONDS + 0.1)
    assert introspect(access) == INACTIVE  # the database


def test_removed_key_verifies_nothing_even_for_tokens_seen_before(
    app, introspect, storefront, isolated_keys
):
    login = storefront.login()
    access = login.json["access_token"]
    assert introspect(access)["active"] is True  # verified once, and remembered
    for path in isolated_keys.keys_dir.glob("*.pem"):
        path.unlink()
    isolated_keys.generate("RS256")  # the old key is gone, a new one signs
    assert introspect(access) == INACTIVE


@pytest.fixture
def two_workers(app):
    """Two workers of one deployment: the same database, the same Redis (whatever the backend:
    the copy of the deny-list and its subscription exist only with Redis), each with its own
    copy of the deny-list."""
    settings = dataclasses.replace(app.config["SETTINGS"], redis_url=REDIS_URL)
    prefix = f"ts-test:{uuid.uuid4().hex[:8]}:"
    workers = [
        create_app({"SETTINGS": settings, "STORE": RedisStore(REDIS_URL, prefix), "TESTING": True})
        for _ in range(2)
    ]
    yield workers
    for worker in workers:
        forget_deny_list(worker)
        worker.extensions["token_store"].flush()
        with worker.app_context():
            db.engine.dispose()


def test_a_revocation_in_one_worker_shows_in_another_at_once(app, two_workers):
    """Worker B answers introspections from its copy of the deny-list; a revocation answered
    by worker A must be visible to B's very next introspection."""
    a, b = (worker.test_client() for worker in two_workers)
    order_service = basic_auth("order-service", app.secrets["order-service"])

    def active_at_b(token: str) -> bool:
        r = b.post("/oauth/introspect", data={"token": token}, headers=order_service)
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.json["active"]

    login = Storefront(a).login().json
    other = Storefront(a).login().json
    for _ in range(3):  # B reads the store once, then its copy
        assert active_at_b(login["access_token"]) and active_at_b(other["access_token"])
    assert two_workers[1].extensions["deny_list"].subscription.live

    revoked = a.post(
        "/oauth/revoke", data={"token": login["access_token"], "client_id": "storefront"}
    )
    assert revoked.status_code == 200
    assert not active_at_b(login["access_token"])  # one access token, by jti
    assert active_at_b(other["access_token"])

    revoked = a.post(
        "/oauth/revoke", data={"token": other["refresh_token"], "client_id": "storefront"}
    )
    assert revoked.status_code == 200
    assert not active_at_b(other["access_token"])  # a whole session, by sid
