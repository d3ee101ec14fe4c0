"""token_service.resource: the verifier resource servers use, against the service's real tokens
and against forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid

import pytest
import redis
from conftest import REDIS_URL, Storefront, build_app, reset, settings_for
from flask import Flask, g

from token_service.extensions import db
from token_service.keys import KeyRing
from token_service.resource import (
    InvalidToken,
    JWKSCache,
    RevocationChecker,
    Verifier,
    require_scopes,
)

ISSUER = "http://issuer.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims(**overrides) -> dict:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "sub": "cus_1",
        "aud": "commerce-api",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "client_id": "storefront",
        "scope": "order.history_view",
        "sid": "sid_1",
        "legal_entity_id": "acme",
    }
    return {**base, **overrides}


@pytest.fixture(params=["RS256", "ES256", "EdDSA"])
def ring(request, tmp_path):
    ring = KeyRing(tmp_path, 3600)
    ring.generate(request.param)
    return ring


def verifier_for(ring, **options) -> Verifier:
    keys = JWKSCache(jwks=json.loads(ring.jwks_json()))
    return Verifier(ISSUER, "commerce-api", keys, **options)


def test_valid_token_of_each_algorithm(ring):
    token = verifier_for(ring).verify(ring.current.encode_jwt(claims()))
    assert token.sub == "cus_1"
    assert token.scopes == {"order.history_view"}
    assert token.legal_entity_id == "acme"
    assert token.has_scopes("order.history_view")
    assert not token.has_scopes("order.order_read_le")


def test_service_tokens_verify_through_discovery(app, client, storefront):
    """Discovery and JWKS served by the real app, fetched through the verifier's own path."""

    def fetch(url: str) -> dict:
        return client.get(url.removeprefix(ISSUER)).json

    verifier = Verifier.from_issuer(ISSUER, "commerce-api", fetch=fetch)
    login = storefront.login()
    token = verifier.verify(login.json["access_token"])
    assert token.legal_entity_id == "acme"
    assert "order.order_read_le" in token.scopes
    assert token.sid is not None
    assert verifier.keys.fetches == 1
    switched = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert verifier.verify(switched.json["access_token"]).legal_entity_id == "globex"
    assert verifier.keys.fetches == 1  # cached: no fetch per token


def test_rejections(ring, tmp_path):
    verifier = verifier_for(ring)
    key = ring.current
    good = key.encode_jwt(claims())
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    signature = base64.urlsafe_b64decode(good.split(".")[2] + "==")
    public_jwk = json.dumps(json.loads(ring.jwks_json())["keys"][0]).encode()
    unsigned = forge({**header, "alg": "HS256"}, claims()).rsplit(".", 1)[0]
    hs256 = unsigned + "." + b64(hmac.new(public_jwk, unsigned.encode(), hashlib.sha256).digest())
    other = KeyRing(tmp_path / "other", 3600).generate(key.alg)
    now = int(time.time())
    cases = {
        "alg none": forge({**header, "alg": "none"}, claims()),
        "HS256 keyed with the public key": hs256,
        "unknown kid": forge({**header, "kid": "nope"}, claims(), signature),
        "wrong typ": forge({**header, "typ": "JWT"}, claims(), signature),
        "missing typ": forge({k: v for k, v in header.items() if k != "typ"}, claims(), signature),
        "tampered": forge(header, claims(scope="admin.manage"), signature),
        "wrong iss": key.encode_jwt(claims(iss="http://evil.test")),
        "wrong aud": key.encode_jwt(claims(aud="other-api")),
        "expired": key.encode_jwt(claims(exp=now - 31, iat=now - 400)),
        "not yet valid": key.encode_jwt(claims(nbf=now + 120)),
        "no iat": key.encode_jwt({k: v for k, v in claims().items() if k != "iat"}),
        "another key, same kid": forge(
            header,
            claims(),
            base64.urlsafe_b64decode(other.encode_jwt(claims()).split(".")[2] + "=="),
        ),
        "garbage": "a.b.c",
        "two segments": "abc.def",
        "oversized": "a" * 9000,
        "header not an object": f"{b64(b'[1]')}.{b64(b'{}')}.",
    }
    for name, token in cases.items():
        with pytest.raises(InvalidToken):
            verifier.verify(token)
            pytest.fail(name)
    assert verifier.verify(good).jti


def test_leeway_accepts_small_clock_skew(ring):
    now = int(time.time())
    token = ring.current.encode_jwt(claims(exp=now - 5, nbf=now + 5))
    assert verifier_for(ring, leeway=30).verify(token)
    with pytest.raises(InvalidToken):
        verifier_for(ring, leeway=0).verify(token)


def test_algorithm_allow_list(ring):
    only_rs = verifier_for(ring, algorithms={"RS256"})
    token = ring.current.encode_jwt(claims())
    if ring.current.alg == "RS256":
        assert only_rs.verify(token)
    else:
        with pytest.raises(InvalidToken):
            only_rs.verify(token)
    with pytest.raises(ValueError):
        verifier_for(ring, algorithms={"HS256"})


def test_jwks_refetched_on_unknown_kid_once_per_cooldown(tmp_path):
    ring = KeyRing(tmp_path, 3600)
    ring.generate("RS256")
    calls = []

    def fetch(url):
        calls.append(url)
        return json.loads(ring.jwks_json())

    keys = JWKSCache("http://issuer.test/jwks.json", cooldown=60, fetch=fetch)
    verifier = Verifier(ISSUER, "commerce-api", keys)
    assert verifier.verify(ring.current.encode_jwt(claims()))
    assert len(calls) == 1
    unknown = forge({"alg": "RS256", "kid": "made-up", "typ": "at+jwt"}, claims())
    for _ in range(5):
        with pytest.raises(InvalidToken):
            verifier.verify(unknown)
    assert len(calls) == 2  # one refetch for five unknown-kid tokens: the cooldown holds
    # After the cooldown, a rotated key is picked up with one fetch.
    keys._refetched_at -= 61
    ring.generate("RS256")
    assert verifier.verify(ring.current.encode_jwt(claims()))
    assert len(calls) == 3
    with pytest.raises(InvalidToken):
        verifier.verify(unknown)
    assert len(calls) == 3


@pytest.fixture
def redis_app(pg_database, keys_dir):
    """The production backends (PostgreSQL + Redis): the online check reads Redis."""
    app = build_app(settings_for(pg_database, REDIS_URL, keys_dir))
    app.secrets = reset(app)
    yield app
    with app.app_context():
        db.engine.dispose()


def test_online_revocation_check(redis_app):
    client = redis_app.test_client()
    storefront = Storefront(client)
    store = redis_app.extensions["token_store"]
    checker = RevocationChecker(redis.Redis.from_url(REDIS_URL), prefix=store.prefix)
    verifier = Verifier(
        ISSUER, "commerce-api", JWKSCache(jwks=client.get("/jwks.json").json), revocation=checker
    )
    login = storefront.login()
    assert verifier.verify(login.json["access_token"])
    client.post(
        "/oauth/revoke", data={"token": login.json["refresh_token"], "client_id": "storefront"}
    )
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(login.json["access_token"])
    down = RevocationChecker("redis://127.0.0.1:1/0", prefix=store.prefix)
    fresh = storefront.login().json["access_token"]
    with pytest.raises(InvalidToken, match="unavailable"):
        Verifier(ISSUER, "commerce-api", verifier.keys, revocation=down).verify(fresh)
    down.fail_open = True
    assert Verifier(ISSUER, "commerce-api", verifier.keys, revocation=down).verify(fresh)


def test_flask_decorator_rfc6750(ring):
    verifier = verifier_for(ring)
    api = Flask("orders")

    @api.get("/orders")
    @require_scopes(verifier, "order.history_view")
    def orders():
        return {"sub": g.access_token.sub}

    @api.get("/company-orders")
    @require_scopes(verifier, "order.order_read_le")
    def company_orders():
        return {}

    c = api.test_client()
    token = ring.current.encode_jwt(claims())
    ok = c.get("/orders", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json == {"sub": "cus_1"}
    missing = c.get("/orders")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    bad = c.get("/orders", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    short = c.get("/company-orders", headers={"Authorization": f"Bearer {token}"})
    assert short.status_code == 403
    assert 'error="insufficient_scope"' in short.headers["WWW-Authenticate"]
    assert 'scope="order.order_read_le"' in short.headers["WWW-Authenticate"]


def test_importable_without_the_app():
    code = (
        "import sys, token_service.resource as r; "
        "bad = [m for m in ('sqlalchemy', 'flask_sqlalchemy', 'token_service.models', "
        "'token_service.extensions', 'flask') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
