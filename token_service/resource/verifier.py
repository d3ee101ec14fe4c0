"""Offline verification of RFC 9068 access tokens: signature from a cached JWKS, `typ`, an
algorithm allow-list, `iss`, `aud`, `exp`/`nbf` with a small leeway."""

from __future__ import annotations

import binascii
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

#: Asymmetric algorithms only: never `none`, never HMAC (a public key is no secret).
ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
MAX_TOKEN_BYTES = 8192
_TYPES = ("at+jwt", "application/at+jwt")


class InvalidToken(Exception):
    """The token must not be trusted; `reason` says why (for logs, not for callers)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AccessToken(NamedTuple):
    """A verified access token (a named tuple: cheap to build on every request)."""

    sub: str
    client_id: str
    scopes: frozenset[str]
    legal_entity_id: str | None
    sid: str | None
    jti: str
    exp: int
    claims: dict

    def has_scopes(self, *names: str) -> bool:
        return self.scopes.issuperset(names)


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64decode(segment: str) -> bytes:
    """base64url without padding (RFC 7515 §2). Lenient about stray characters like
    binascii is: every decoded segment is either covered by the signature or is it."""
    data = segment.encode("ascii").translate(_URLSAFE)
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _int(segment: str) -> int:
    return int.from_bytes(_b64decode(segment), "big")


def _public_key(jwk: dict):
    """A cryptography public key and its algorithm from a JWK, or None if unusable."""
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key(), "RS256"
    if kty == "EC" and jwk.get("crv") == "P-256":
        numbers = ec.EllipticCurvePublicNumbers(_int(jwk["x"]), _int(jwk["y"]), ec.SECP256R1())
        return numbers.public_key(), "ES256"
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_b64decode(jwk["x"])), "EdDSA"
    return None


def _fetch_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - https/http only
        return json.load(response)


class JWKSCache:
    """Public keys by kid. Fetched on first use; refetched only when a token names an unknown
    kid, and then at most once per `cooldown` seconds: a flood of made-up kids cannot make us
    hammer the issuer, while the first token of a freshly rotated key is accepted at once."""

    def __init__(
        self,
        jwks_uri: str | None = None,
        *,
        jwks: dict | None = None,
        cooldown: float = 60.0,
        fetch: Callable[[str], dict] = _fetch_json,
    ) -> None:
        self.jwks_uri = jwks_uri
        self.cooldown = cooldown
        self._fetch = fetch
        self._keys: dict[str, tuple[object, str]] = {}
        self._loaded = False
        self._refetched_at = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0
        if jwks is not None:
            self._load(jwks)

    def _load(self, jwks: dict) -> None:
        keys = {}
        for jwk in jwks.get("keys", []):
            if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str):
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            try:
                parsed = _public_key(jwk)
            except (KeyError, ValueError, TypeError, binascii.Error):
                continue
            if parsed is not None and jwk.get("alg", parsed[1]) == parsed[1]:
                keys[jwk["kid"]] = parsed
        self._keys = keys
        self._loaded = True

    def known(self, kid: str) -> tuple[object, str] | None:
        """(public key, alg) for a kid already loaded; never fetches."""
        return self._keys.get(kid)

    def get(self, kid: str) -> tuple[object, str] | None:
        """(public key, alg) for a kid, refetching the JWKS once per cooldown if unknown."""
        found = self._keys.get(kid)
        if found is not None or self.jwks_uri is None:
            return found
        with self._lock:
            found = self._keys.get(kid)
            if found is not None:
                return found
            if self._loaded:
                if time.monotonic() - self._refetched_at < self.cooldown:
                    return None
                self._refetched_at = time.monotonic()
            self.fetches += 1
            try:
                self._load(self._fetch(self.jwks_uri))
            except (OSError, ValueError):
                return None  # the issuer is unreachable: keep the keys we have
            return self._keys.get(kid)


class RevocationChecker:
    """Online check against the service's Redis deny-list (see docs/operations.md):
    `deny:jti:<jti>` revokes one token, `deny:sid:<sid>` = T revokes the session's tokens
    issued before T. One MGET per token. `fail_open=False` (the default) refuses tokens while
    Redis is unreachable."""

    def __init__(self, redis, prefix: str = "ts:", *, fail_open: bool = False) -> None:
        if isinstance(redis, str):
            import redis as redis_lib

            redis = redis_lib.Redis.from_url(redis, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.redis = redis
        self.prefix = prefix
        self.fail_open = fail_open

    def check(self, token: AccessToken, iat: int) -> None:
        keys = [f"{self.prefix}deny:jti:{token.jti}"]
        if token.sid:
            keys.append(f"{self.prefix}deny:sid:{token.sid}")
        try:
            values = self.redis.mget(keys)
        except Exception as exc:
            if self.fail_open:
                return
            raise InvalidToken("revocation state unavailable") from exc
        if values[0] is not None:
            raise InvalidToken("revoked")
        if len(values) > 1 and values[1] is not None and iat < int(values[1]):
            raise InvalidToken("revoked")


class Verifier:
    """Verifies access tokens of one issuer for one audience."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        keys: JWKSCache,
        *,
        algorithms=ALLOWED_ALGORITHMS,
        leeway: int = 30,
        revocation: RevocationChecker | None = None,
    ) -> None:
        algorithms = frozenset(algorithms)
        if not algorithms or not algorithms <= ALLOWED_ALGORITHMS:
            raise ValueError(f"algorithms must be a subset of {sorted(ALLOWED_ALGORITHMS)}")
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.algorithms = algorithms
        self.leeway = leeway
        self.revocation = revocation
        self._headers: dict[str, tuple[str, str]] = {}

    @classmethod
    def from_issuer(cls, issuer: str, audience: str, *, fetch=_fetch_json, **options) -> Verifier:
        """Discover `jwks_uri` from the issuer's RFC 8414 metadata (lazily fetched keys)."""
        metadata = fetch(issuer.rstrip("/") + "/.well-known/oauth-authorization-server")
        if metadata.get("issuer") != issuer.rstrip("/"):
            raise ValueError("the metadata's issuer does not match")
        cooldown = options.pop("cooldown", 60.0)
        keys = JWKSCache(metadata["jwks_uri"], cooldown=cooldown, fetch=fetch)
        return cls(issuer.rstrip("/"), audience, keys, **options)

    def _header(self, segment: str) -> tuple[str, str]:
        """(alg, kid) of an acceptable header. The few distinct headers an issuer uses are
        checked once and remembered; a bad one raises InvalidToken every time."""
        checked = self._headers.get(segment)
        if checked is not None:
            return checked
        try:
            header = json.loads(_b64decode(segment))
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed") from None
        if not isinstance(header, dict):
            raise InvalidToken("malformed")
        typ = header.get("typ")
        # RFC 9068 §4: "Resource servers MUST verify that the typ header value is at+jwt or
        # application/at+jwt and reject tokens carrying any other value."
        if not isinstance(typ, str) or typ.lower() not in _TYPES:
            raise InvalidToken("typ")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.algorithms or not isinstance(kid, str):
            raise InvalidToken("alg")
        if header.get("crit") is not None:  # RFC 7515 §4.1.11: no extension is understood
            raise InvalidToken("crit")
        checked = (alg, kid)
        if len(self._headers) < 64:
            self._headers[segment] = checked
        return checked

    def verify(self, token: str) -> AccessToken:
        """The verified token, or InvalidToken."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("malformed")
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            signature = _b64decode(signature_b64)
            signing_input = token[: len(header_b64) + 1 + len(payload_b64)].encode("ascii")
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed") from None
        alg, kid = self._header(header_b64)
        found = self.keys.known(kid) or self.keys.get(kid)
        if found is None:
            raise InvalidToken("unknown kid")
        key, key_alg = found
        if key_alg != alg:
            raise InvalidToken("alg does not match the key")
        if not _signature_valid(key, alg, signing_input, signature):
            raise InvalidToken("signature")
        try:
            claims = json.loads(_b64decode(payload_b64))
        except (ValueError, binascii.Error):
            raise InvalidToken("malformed") from None
        if not isinstance(claims, dict):
            raise InvalidToken("malformed")
        return self._check_claims(claims)

    def _check_claims(self, claims: dict) -> AccessToken:
        get = claims.get
        if get("iss") != self.issuer:
            raise InvalidToken("iss")
        aud = get("aud")
        if aud != self.audience and not (isinstance(aud, list) and self.audience in aud):
            raise InvalidToken("aud")
        now = time.time()
        exp, iat, nbf = get("exp"), get("iat"), get("nbf")
        if not _number(exp) or exp + self.leeway <= now:
            raise InvalidToken("expired")
        if not _number(iat):
            raise InvalidToken("iat")
        if nbf is not None and (not _number(nbf) or nbf - self.leeway > now):
            raise InvalidToken("not yet valid")
        sub, client_id, jti, scope = get("sub"), get("client_id"), get("jti"), get("scope", "")
        entity, sid = get("legal_entity_id"), get("sid")
        # Exact types: a number or a list where a string belongs is a malformed token.
        if (
            type(sub) is not str
            or type(client_id) is not str
            or type(jti) is not str
            or type(scope) is not str
            or (entity is not None and type(entity) is not str)
            or (sid is not None and type(sid) is not str)
        ):
            raise InvalidToken("claims")
        token = AccessToken(
            sub, client_id, frozenset(scope.split()), entity, sid, jti, int(exp), claims
        )
        if self.revocation is not None:
            self.revocation.check(token, int(iat))
        return token


def _number(value) -> bool:
    return type(value) is int or type(value) is float


_PKCS1V15, _SHA256 = padding.PKCS1v15(), hashes.SHA256()
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _signature_valid(key, alg: str, signing_input: bytes, signature: bytes) -> bool:
    try:
        if alg == "RS256":
            key.verify(signature, signing_input, _PKCS1V15, _SHA256)
        elif alg == "ES256":
            if len(signature) != 64:
                return False
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)
        else:
            key.verify(signature, signing_input)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
