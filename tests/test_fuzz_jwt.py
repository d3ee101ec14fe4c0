"""Malformed and forged JWTs at every surface that parses one: introspection, revocation, the
admin API's bearer check and the resource kit (issue 15, defects 3, 4 and 10, and its fuzz test).
Whatever the header and payload hold: never a 5xx, never an exception but InvalidToken, and one
spelling per token.

JWT_FUZZ_EXAMPLES (default 300) cases per backend for the app, twice as many per algorithm for
the kit alone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import time

import pytest
from conftest import basic_auth
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from token_service.keys import KeyRing
from token_service.resource import InvalidToken, JWKSCache, Verifier, require_scopes

EXAMPLES = int(os.environ.get("JWT_FUZZ_EXAMPLES", "300"))
ISSUER = "http://issuer.test"
INACTIVE = {"active": False}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: bytes, payload: bytes, signature: bytes = b"") -> str:
    return f"{b64(header)}.{b64(payload)}.{b64(signature)}"


def sign(key, header: bytes, payload: bytes) -> str:
    """A token with these exact segments, really signed by one of the service's keys."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = key.registry.get_alg(key.alg).sign(signing_input.encode(), key.key)
    return f"{signing_input}.{b64(signature)}"


#: Defect 3: a header nested 1,500 deep (a RecursionError in a JSON parser).
NESTED = b"[" * 1500 + b"]" * 1500


class Surfaces:
    """Every place of the running service that reads a JWT, and the resource kit."""

    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()
        self.order_service = basic_auth("order-service", app.secrets["order-service"])
        jwks = self.client.get("/jwks.json").json
        self.verifier = Verifier(ISSUER, "commerce-api", JWKSCache(jwks=jwks))

    def introspect(self, token: str):
        r = self.client.post("/oauth/introspect", data={"token": token}, headers=self.order_service)
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.json

    def revoke(self, token: str) -> None:
        r = self.client.post("/oauth/revoke", data={"token": token, "client_id": "storefront"})
        assert r.status_code == 200, r.get_data(as_text=True)

    def admin(self, token: str, method: str = "GET", path: str = "/admin/clients"):
        r = self.client.open(path, method=method, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code < 500, (method, path, r.status_code, r.get_data(as_text=True))
        return r

    def kit(self, token: str):
        """The kit's answer: an AccessToken, or None for InvalidToken; any other exception
        fails the test."""
        try:
            return self.verifier.verify(token)
        except InvalidToken:
            return None

    def refused_everywhere(self, token: str) -> None:
        """A token no surface may accept."""
        assert self.introspect(token) == INACTIVE
        self.revoke(token)
        r = self.admin(token)
        assert r.status_code == 401, r.get_data(as_text=True)
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        assert self.kit(token) is None


@pytest.fixture
def surfaces(app) -> Surfaces:
    return Surfaces(app)


def admin_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every admin route, its path parameters filled in."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "x", rule.rule)
        routes += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return routes


# -- defect 3: a deeply nested header ---------------------------------------------------------


def test_nested_header_is_refused_by_every_surface(app, surfaces):
    token = compact(NESTED, b"{}")
    assert surfaces.introspect(token) == INACTIVE
    surfaces.revoke(token)
    routes = admin_routes(app)
    assert len(routes) > 10
    for method, path in routes:
        r = surfaces.admin(token, method, path)
        assert r.status_code == 401, (method, path, r.status_code)
    assert surfaces.kit(token) is None


def test_nested_payload_under_a_real_signature_is_refused(app, surfaces):
    """Only we can sign, but a parser must not depend on that."""
    key = app.extensions["keyring"].current
    header = json.dumps({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}).encode()
    # Deeper than Python's recursion limit, within the 4,096 characters a token may have.
    surfaces.refused_everywhere(sign(key, header, b"[" * 1100 + b"]" * 1100))


def odd_claims(now: int) -> dict[str, dict]:
    """Claims of the wrong type or out of range, each in an otherwise live token."""
    live = {
        "iss": ISSUER,
        "sub": "storefront",
        "aud": "commerce-api",
        "exp": now + 300,
        "iat": now,
        "jti": "j" * 22,
        "client_id": "storefront",
        "scope": "",
    }
    odd = {
        "exp": [float("inf"), float("nan"), 10**400, 2**64, 1.5e9, "soon", None, True],
        "iat": [float("inf"), float("-inf"), 10**400, "then", [1]],
        "jti": [["j"], {"j": 1}, 1],
        "sid": [["s"], {"s": 1}, 1],
        "legal_entity_id": [["acme"], {"acme": 1}, 1],
        "client_id": [["storefront"], {"a": 1}, 1],
        "sub": [["storefront"], 1],
        "scope": [["admin.read"], 1],
        "iss": [[ISSUER], 1],
    }
    return {
        f"{name}={value!r}": {**live, name: value}
        for name, values in odd.items()
        for value in values
    }


def test_odd_claims_under_a_real_signature_give_no_5xx(app, surfaces):
    key = app.extensions["keyring"].current
    header = json.dumps({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}).encode()
    for name, claims in odd_claims(int(time.time())).items():
        token = sign(key, header, json.dumps(claims).encode())
        assert surfaces.introspect(token) == INACTIVE, name
        surfaces.revoke(token)
        surfaces.admin(token)
        assert surfaces.kit(token) is None, name


# -- defect 4: the kit raises InvalidToken and nothing else -----------------------------------

MALFORMED_HEADERS = {
    "unhashable alg": {"alg": ["RS256"], "typ": "at+jwt", "kid": "a"},
    "alg an object": {"alg": {"RS256": 1}, "typ": "at+jwt", "kid": "a"},
    "kid a list": {"alg": "RS256", "typ": "at+jwt", "kid": ["a"]},
    "kid a number": {"alg": "RS256", "typ": "at+jwt", "kid": 1},
    "typ a list": {"alg": "RS256", "typ": ["at+jwt"], "kid": "a"},
    "crit a string": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "crit": "exp"},
    "crit a number": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "crit": 5},
    "crit of numbers": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "crit": [1]},
    "unencoded payload": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "b64": False},
    "b64 not a boolean": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "b64": "no"},
    "jku elsewhere": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "jku": "http://evil.test/"},
    "jku not a URL": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "jku": 7},
    "jwk not an object": {"alg": "RS256", "typ": "at+jwt", "kid": "a", "jwk": "k"},
    "kid traversal": {"alg": "RS256", "typ": "at+jwt", "kid": "../../../../etc/passwd"},
}
NOT_OBJECTS = ['"alg"', '["alg"]', "null", "1", "1e999", "true", '{"alg":"RS256"', "\ufeff{}"]
#: RFC 7515 §4: duplicate names are refused or the last one wins; here the last one is `none`.
DUPLICATE = '{"alg":"RS256","typ":"at+jwt","kid":"a","alg":"none"}'


def test_malformed_headers_are_invalid_tokens_for_the_kit(app, surfaces):
    key = app.extensions["keyring"].current
    claims = json.dumps({"iss": ISSUER, "aud": "commerce-api", "exp": 9_999_999_999}).encode()
    headers = {name: json.dumps(h).encode() for name, h in MALFORMED_HEADERS.items()}
    headers |= {f"header {h}": h.encode() for h in [*NOT_OBJECTS, DUPLICATE]}
    for name, header in headers.items():
        for kid in ("a", key.kid):  # an unknown kid, and ours: every check is reached
            header = header.replace(b'"a"', json.dumps(kid).encode())
            for token in (compact(header, claims, b"x" * 256), sign(key, header, claims)):
                assert surfaces.kit(token) is None, name
                assert surfaces.introspect(token) == INACTIVE, name
                assert surfaces.admin(token).status_code == 401, name


def test_flask_decorator_answers_401_to_malformed_headers(app):
    jwks = app.test_client().get("/jwks.json").json
    verifier = Verifier(ISSUER, "commerce-api", JWKSCache(jwks=jwks))
    api = Flask("orders")

    @api.get("/orders")
    @require_scopes(verifier, "order.history_view")
    def orders():
        return {}

    c = api.test_client()
    for header in [json.dumps(MALFORMED_HEADERS["unhashable alg"]).encode(), NESTED]:
        r = c.get("/orders", headers={"Authorization": f"Bearer {compact(header, b'{}')}"})
        assert r.status_code == 401
        assert r.json["error"] == "invalid_token"


# -- defect 10: one spelling per token --------------------------------------------------------


def respellings(token: str) -> dict[str, str]:
    """The same bytes written otherwise: each must be refused."""
    head, payload, signature = token.split(".")
    last = ALPHABET.index(signature[-1])
    return {
        "!!! after the signature": token + "!!!",
        "padding": token + "==",
        "one pad": token + "=",
        "stray bits in the last character": f"{head}.{payload}.{signature[:-1]}"
        + ALPHABET[last ^ 1],
        "a space inside": f"{head}.{payload}.{signature[:10]} {signature[10:]}",
        "a newline inside": f"{head}.{payload}.{signature[:10]}\n{signature[10:]}",
        "standard alphabet": f"{head}.{payload}.{signature.replace('-', '+').replace('_', '/')}",
        "padded header": f"{head}{'=' * (-len(head) % 4) or '===='}.{payload}.{signature}",
        "a dot more": f"{token}.",
        "non-ASCII": token + "é",
    }


def test_a_token_has_exactly_one_spelling(app, client, storefront, surfaces):
    access = storefront.login().json["access_token"]
    assert "-" in access or "_" in access  # the standard-alphabet spelling differs
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("admin-cli", app.secrets["admin-cli"]),
    )
    admin_token = r.json["access_token"]
    assert surfaces.admin(admin_token).status_code == 200
    assert surfaces.introspect(access)["active"] is True
    assert surfaces.kit(access) is not None
    for name, spelling in respellings(access).items():
        assert surfaces.introspect(spelling) == INACTIVE, name
        assert surfaces.kit(spelling) is None, name
    for name, spelling in respellings(admin_token).items():
        if " " not in spelling and "\n" not in spelling and "é" not in spelling:
            assert surfaces.admin(spelling).status_code == 401, name
    assert surfaces.introspect(access)["active"] is True  # no respelling revoked it


# -- the fuzz test ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**80)
    | st.floats()
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def member(*plausible):
    return st.sampled_from(plausible) | json_values


@st.composite
def jwt_parts(draw, kid: str, client_ids: list[str]):
    """(header bytes, payload bytes): plausible members mixed with arbitrary JSON, and now and
    then bytes that are no JSON at all."""
    header = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "alg": member("RS256", "ES256", "EdDSA", "none", "HS256", "rs256"),
                "typ": member("at+jwt", "AT+JWT", "application/at+jwt", "JWT"),
                "kid": member(kid, "", "../x"),
                "crit": member(["b64"], ["exp"], []),
                "b64": member(False, True),
                "jku": member("http://evil.test/jwks.json"),
                "jwk": json_values,
                "x5c": member(["MIIB"]),
            },
        )
        | json_values
    )
    now = 1_900_000_000
    payload = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "iss": member(ISSUER, "http://evil.test"),
                "sub": member(*client_ids, "cus_1"),
                "aud": member("commerce-api", "admin-api", ["commerce-api"]),
                "exp": member(now, 1, 2**64, float("inf"), float("nan")),
                "iat": member(1_700_000_000, 2**64, -1),
                "nbf": member(now),
                "jti": member("j" * 22),
                "client_id": member(*client_ids),
                "scope": member("admin.read admin.manage", "order.history_view", ""),
                "sid": member("sid_1"),
                "legal_entity_id": member("acme"),
            },
        )
        | json_values
    )
    encode = lambda value: json.dumps(value).encode()  # noqa: E731
    header, payload = encode(header), encode(payload)
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.binary(max_size=40))
    if draw(st.integers(0, 9)) == 0:
        payload = draw(st.binary(max_size=40))
    return header, payload


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )


def test_fuzz_jwts_at_every_surface(app, surfaces):
    """Forged signatures are refused everywhere; real signatures over arbitrary content (only
    our key could make them, but the code after the signature check must hold too) give no
    5xx and no exception but InvalidToken."""
    key = app.extensions["keyring"].current
    clients = ["storefront", "order-service", "admin-cli"]

    @fuzz_settings(EXAMPLES)
    @given(parts=jwt_parts(key.kid, clients), signature=st.binary(max_size=300))
    def run(parts, signature):
        header, payload = parts
        surfaces.refused_everywhere(compact(header, payload, signature))
        signed = sign(key, header, payload)
        surfaces.introspect(signed)
        surfaces.revoke(signed)
        surfaces.admin(signed)
        surfaces.kit(signed)

    run()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_fuzz_the_kit_alone(tmp_path, alg):
    ring = KeyRing(tmp_path, 3600)
    key = ring.generate(alg)
    verifier = Verifier(ISSUER, "commerce-api", JWKSCache(jwks=json.loads(ring.jwks_json())))

    @fuzz_settings(EXAMPLES * 2)
    @given(parts=jwt_parts(key.kid, ["storefront"]), signature=st.binary(max_size=300))
    def run(parts, signature):
        header, payload = parts
        with pytest.raises(InvalidToken):
            verifier.verify(compact(header, payload, signature))
        with contextlib.suppress(InvalidToken):  # never another exception
            verifier.verify(sign(key, header, payload))
        assert ring.decode(compact(header, payload, signature)) is None
        decoded = ring.decode(sign(key, header, payload))
        assert decoded is None or isinstance(decoded, dict)

    run()
