"""Access tokens verify with independent JOSE libraries through the published JWKS (RFC 9068)."""

from __future__ import annotations

import json

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from token_service.keys import KeyRing, thumbprint

RFC9068_CLAIMS = {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"}


def test_customer_token_verifies_with_pyjwt_through_jwks(client, storefront):
    token = storefront.login().json["access_token"]
    jwks = client.get("/jwks.json")
    assert jwks.headers["Content-Type"].startswith("application/jwk-set+json")
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    keys = {k["kid"]: k for k in jwks.json["keys"]}
    key = jwt.PyJWK(keys[header["kid"]])
    claims = jwt.decode(
        token,
        key=key,
        algorithms=["RS256"],
        audience="commerce-api",
        issuer="http://issuer.test",
        options={"require": [*RFC9068_CLAIMS]},
    )
    assert RFC9068_CLAIMS | {"sid", "auth_time", "legal_entity_id"} <= set(claims)
    assert claims["client_id"] == "storefront"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["auth_time"] <= claims["iat"]


def test_token_verifies_with_joserfc(client, storefront):
    token = storefront.login().json["access_token"]
    keyset = KeySet.import_key_set(client.get("/jwks.json").json)
    decoded = jose_jwt.decode(token, keyset, algorithms=["RS256"])
    assert decoded.header["typ"] == "at+jwt"
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": "http://issuer.test"},
        aud={"essential": True, "value": "commerce-api"},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        sub={"essential": True},
    ).validate(decoded.claims)


def test_kid_is_rfc7638_thumbprint(client):
    for jwk in client.get("/jwks.json").json["keys"]:
        assert jwk["kid"] == thumbprint(jwk)
        assert "d" not in jwk and "p" not in jwk


def test_rfc7638_example_thumbprint():
    # RFC 7638 §3.1's worked example.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
            "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
            "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
            "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_other_algorithms_verify(tmp_path, alg):
    ring = KeyRing(tmp_path, 3600)
    key = ring.generate(alg)
    token = key.encode_jwt({"iss": "i", "sub": "s", "aud": "a", "exp": 9999999999, "iat": 1})
    jwks = json.loads(ring.jwks_json())
    pyjwt_key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(token, key=pyjwt_key, algorithms=[alg], audience="a")
    assert claims["sub"] == "s"
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}


def test_rotation_keeps_old_key_published_until_retention(tmp_path):
    ring = KeyRing(tmp_path, retention_seconds=3600)
    old = ring.generate("RS256")
    new = ring.generate("RS256")
    assert ring.current.kid == new.kid
    assert {k["kid"] for k in json.loads(ring.jwks_json())["keys"]} == {old.kid, new.kid}
    assert ring.prune() == []
    expired = KeyRing(tmp_path, retention_seconds=0)
    assert {k["kid"] for k in json.loads(expired.jwks_json())["keys"]} == {new.kid}
    assert expired.prune() == [old.path]
    assert not old.path.exists()


def test_new_key_file_is_picked_up_without_restart(app, client, storefront, keys_dir):
    before = jwt.get_unverified_header(storefront.login().json["access_token"])["kid"]
    ring = app.extensions["keyring"]
    new = KeyRing(keys_dir, 3660).generate("RS256")
    try:
        ring._checked_at = 0  # skip the one-second stat throttle
        after = jwt.get_unverified_header(storefront.login().json["access_token"])["kid"]
        assert after == new.kid != before
        assert {before, new.kid} <= {k["kid"] for k in client.get("/jwks.json").json["keys"]}
    finally:
        new.path.unlink()
        ring._checked_at = 0
        ring.all_keys()


def test_discovery_documents(client):
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        meta = client.get(path).json
        assert meta["issuer"] == "http://issuer.test"
        assert meta["token_endpoint"] == "http://issuer.test/oauth/token"
        assert meta["jwks_uri"] == "http://issuer.test/jwks.json"
        assert "refresh_token" in meta["grant_types_supported"]
        assert "none" in meta["token_endpoint_auth_methods_supported"]
        assert "order.order_read_le" in meta["scopes_supported"]


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])  # deterministic signatures: comparable
def test_encode_jwt_is_joserfcs_jwt_encode_byte_for_byte(tmp_path, alg):
    key = KeyRing(tmp_path, 3600).generate(alg)
    claims = {"iss": "i", "sub": "s", "aud": ["a", "b"], "exp": 9999999999, "iat": 1}
    claims["scope"] = "order.order_read_le quote.quote_read_own"
    claims["name"] = "Zoë"  # non-ASCII in the payload
    for typ in ("at+jwt", "JWT"):
        header = {"typ": typ, "alg": alg, "kid": key.kid}
        expected = jose_jwt.encode(header, claims, key.key, registry=key.registry)
        assert key.encode_jwt(dict(claims), typ=typ) == expected
