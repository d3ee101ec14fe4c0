"""Offline verification of RFC 9068 access tokens with joserfc: signature from a cached JWKS,
`typ`, an algorithm allow-list, `iss`, `aud`, `exp`/`nbf`/`iat` with a small leeway, and the
claims' types. Whatever a token holds, the only exception is InvalidToken."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import NamedTuple

from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jwt import JWTClaimsRegistry

from ..expiring import ExpiringMap
from . import jose
from .jose import ALLOWED_ALGORITHMS

MAX_TOKEN_BYTES = 8192
VERIFIED_CACHE_SIZE = 4096
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
        self._keys: dict[str, tuple[Key, str]] = {}
        self._loaded = False
        self._refetched_at = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0
        self.generation = 0  # moves whenever the keys change
        if jwks is not None:
            self._load(jwks)

    def _load(self, jwks: dict) -> None:
        keys = {}
        for jwk in jwks.get("keys", []):
            # Parsed once, here: joserfc's key objects keep the `cryptography` key they wrap.
            key = jose.public_key(jwk)
            if key is not None and isinstance(jwk.get("kid"), str):
                keys[jwk["kid"]] = (key, jose.alg_of(key))
        self._keys = keys
        self._loaded = True
        self.generation += 1

    def known(self, kid: str) -> tuple[Key, str] | None:
        """(public key, alg) for a kid already loaded; never fetches."""
        return self._keys.get(kid)

    def get(self, kid: str) -> tuple[Key, str] | None:
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
            except (OSError, ValueError, TypeError, AttributeError, RecursionError):
                return None  # the issuer is unreachable or answers junk: keep the keys we have
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
    """Verifies access tokens of one issuer for one audience. Every check is spelled out:
    joserfc's registries take the algorithm allow-list, the required claims, `iss`, `aud` and
    the `exp`/`nbf`/`iat` leeway; `typ`, `kid` and `crit` are checked on the header."""

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
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.registry = jose.JWSRegistry(algorithms)  # raises ValueError outside the allow-list
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.revocation = revocation
        self.claims = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},  # a string, or a list holding it
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
            client_id={"essential": True},
        )
        # Tokens verified before, until they expire: a client presents one token for its whole
        # lifetime, and the signature check and joserfc's claim checks cost most of a
        # verification. Revocation is still checked every time, and a change of the keys
        # forgets them all, so that a removed key verifies nothing.
        self._verified = ExpiringMap(VERIFIED_CACHE_SIZE, 0, clock=time.time)
        self._generation = keys.generation

    @classmethod
    def from_issuer(cls, issuer: str, audience: str, *, fetch=_fetch_json, **options) -> Verifier:
        """Discover `jwks_uri` from the issuer's RFC 8414 metadata (lazily fetched keys)."""
        metadata = fetch(issuer.rstrip("/") + "/.well-known/oauth-authorization-server")
        if metadata.get("issuer") != issuer.rstrip("/"):
            raise ValueError("the metadata's issuer does not match")
        cooldown = options.pop("cooldown", 60.0)
        keys = JWKSCache(metadata["jwks_uri"], cooldown=cooldown, fetch=fetch)
        return cls(issuer.rstrip("/"), audience, keys, **options)

    def verify(self, token: str) -> AccessToken:
        """The verified token, or InvalidToken, whatever the token holds."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("malformed")
        if self._generation != self.keys.generation:
            self._verified.clear()
            self._generation = self.keys.generation
        verified = self._verified.get(token)
        if verified is None:
            verified = self._access_token(self._verified_claims(token))
            # joserfc's rule: expired once `exp <= now - leeway`.
            self._verified.put(token, verified, expires_at=verified.exp + self.leeway)
        if self.revocation is not None:
            self.revocation.check(verified, verified.claims["iat"])
        return verified._replace(claims=dict(verified.claims))

    def _verified_claims(self, token: str) -> dict:
        """Claims of a token whose header, signature and registered claims are acceptable."""
        try:
            signed = jose.extract(token, self.registry)
            # RFC 9068 §4: "Resource servers MUST verify that the typ header value is at+jwt
            # or application/at+jwt and reject tokens carrying any other value."
            alg, kid = jose.header_of(signed, _TYPES)
            if alg not in self.algorithms:
                raise InvalidToken("alg")
            found = self.keys.known(kid) or self.keys.get(kid)
            if found is None:
                raise InvalidToken("unknown kid")
            key, key_alg = found
            if key_alg != alg:
                raise InvalidToken("alg does not match the key")
            claims = jose.verified_claims(signed, key, self.registry)
            self.claims.validate(claims)
        except JoseError as error:
            raise InvalidToken(error.error) from None
        except jose.UNTRUSTED_INPUT_ERRORS:
            raise InvalidToken("malformed") from None
        return claims

    def _access_token(self, claims: dict) -> AccessToken:
        # Exact types: a number or a list where a string belongs is a malformed token.
        if not jose.well_formed(claims):
            raise InvalidToken("claims")
        get = claims.get
        sub, client_id, jti, scope = get("sub"), get("client_id"), get("jti"), get("scope", "")
        return AccessToken(
            sub,
            client_id,
            frozenset(scope.split()),
            get("legal_entity_id"),
            get("sid"),
            jti,
            get("exp"),
            claims,
        )
