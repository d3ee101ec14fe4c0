"""Signing keys: load the PEM files in the keys directory, sign access tokens, publish the JWKS.

The newest file signs. An older key stays published until every token it can have signed has
expired: its successor's creation time plus the longest access-token lifetime. Every worker
notices a new file within a second (one stat of the directory per second at most).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key
from joserfc.jws import JWSAlgModel
from joserfc.jwt import convert_claims
from joserfc.util import json_b64encode, urlsafe_b64encode

from .expiring import ExpiringMap
from .resource import jose

STAMP = "%Y%m%dT%H%M%S%fZ"  # microseconds: names sort in creation order
ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1

# The joserfc key class of each private key type we sign with.
_KEY_CLASSES = (
    (rsa.RSAPrivateKey, RSAKey),
    (ec.EllipticCurvePrivateKey, ECKey),
    (ed25519.Ed25519PrivateKey, OKPKey),
)


def thumbprint(jwk: dict) -> str:
    """The RFC 7638 thumbprint (SHA-256 over the required members) of a JWK."""
    return import_key(jwk).thumbprint()


def generate_private_key(alg: str):
    """A new `cryptography` private key for `alg`."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported alg {alg}")


def _jose_key(private_key) -> Key:
    for native, key_class in _KEY_CLASSES:
        if isinstance(private_key, native):
            return key_class.import_key(private_key)
    raise ValueError(f"unsupported key type {type(private_key).__name__}")


@dataclass(frozen=True)
class SigningKey:
    """One private key, as `cryptography` and joserfc objects, and its public JWK."""

    kid: str
    alg: str
    created_at: datetime
    path: Path
    private_key: object
    key: Key
    jwk: dict
    registry: jose.JWSRegistry
    # By `typ`: the header segment and the algorithm, checked and encoded once (the header
    # never changes).
    _prepared: dict[str, tuple[bytes, JWSAlgModel]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        key = _jose_key(private_key)
        alg = jose.alg_of(key)
        if alg is None:
            raise ValueError(f"{path.name}: ES256 needs a P-256 key")
        kid = key.thumbprint()
        try:
            created = datetime.strptime(path.name.split("-", 1)[0], STAMP).replace(tzinfo=UTC)
        except ValueError:
            created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return cls(
            kid=kid,
            alg=alg,
            created_at=created,
            path=path,
            private_key=private_key,
            key=key,
            jwk={**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"},
            # This key's algorithm only: a token naming another is not one this key signed.
            registry=jose.JWSRegistry({alg}),
        )

    def encode_jwt(self, claims: dict, typ: str = ACCESS_TOKEN_TYPE) -> str:
        """Compact JWS of `claims` with header {typ, alg, kid}: what joserfc's `jwt.encode`
        makes, byte for byte, but with the header's check and encoding and the key's check
        done once per key and `typ` instead of for every token. The claims' encoding and the
        signature are joserfc's own."""
        header, algorithm = self._prepared.get(typ) or self._prepare(typ)
        signing_input = header + b"." + urlsafe_b64encode(convert_claims(claims))
        signature = urlsafe_b64encode(algorithm.sign(signing_input, self.key))
        return (signing_input + b"." + signature).decode()

    def _prepare(self, typ: str) -> tuple[bytes, JWSAlgModel]:
        # jwt.encode's order: `typ` first (its default goes there), then the given header.
        header = {"typ": typ, "alg": self.alg, "kid": self.kid}
        self.registry.check_header(header)
        algorithm = self.registry.get_alg(self.alg)
        algorithm.check_key(self.key)
        prepared = self._prepared[typ] = (json_b64encode(header), algorithm)
        return prepared


VERIFIED_CACHE_SIZE = 4096
_REGISTRY = jose.JWSRegistry()  # for parsing; each key checks with its own algorithm's


class NoSigningKey(RuntimeError):
    """The keys directory holds no usable private key."""


class KeyRing:
    """The keys directory as the service sees it, reloaded when the directory changes."""

    def __init__(self, keys_dir: Path, retention_seconds: int) -> None:
        self.keys_dir = Path(keys_dir)
        self.retention_seconds = retention_seconds
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._mtime_ns = -1
        self._keys: list[SigningKey] = []  # newest first
        self._by_kid: dict[str, SigningKey] = {}
        self._loaded: dict[Path, SigningKey] = {}
        self._jwks_json = b'{"keys":[]}'
        # Tokens verified before, until they expire: introspection and revocation see the same
        # token again and again, and a signature check costs more than the rest of the request.
        # Forgotten whenever the keys change, so that a removed key verifies nothing.
        self._verified = ExpiringMap(VERIFIED_CACHE_SIZE, 0, clock=time.time)
        self._generation = 0

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < 1.0 and self._keys:
            return
        with self._lock:
            if now - self._checked_at < 1.0 and self._keys:
                return  # another thread checked while this one waited for the lock
            self._checked_at = now
            try:
                mtime = self.keys_dir.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = -2
            if mtime != self._mtime_ns or not self._keys:
                self._reload()
                self._mtime_ns = mtime
            else:
                self._publish()

    def _reload(self) -> None:
        paths = sorted(self.keys_dir.glob("*.pem"), reverse=True) if self.keys_dir.is_dir() else []
        loaded = {}
        for path in paths:
            loaded[path] = self._loaded.get(path) or SigningKey.load(path)
        self._loaded = loaded
        keys = [loaded[p] for p in paths]
        # The lookup first, then the list `current` signs from: a thread in between can verify
        # every key that may already be signing (each name is one assignment: old or new).
        self._by_kid = {key.kid: key for key in reversed(keys)}
        self._keys = keys
        # Bumped before the clear: a thread that verified against the old keys and caches its
        # result after the clear sees the bump and drops it again (see decode).
        self._generation += 1
        self._verified.clear()
        self._publish()

    def _publish(self) -> None:
        """Current key, and each older key until `retention` after its successor appeared."""
        published, successor_at = [], None
        now = datetime.now(UTC)
        for key in self._keys:
            if (
                successor_at is None
                or (now - successor_at).total_seconds() < self.retention_seconds
            ):
                published.append(key.jwk)
            successor_at = key.created_at
        self._jwks_json = json.dumps({"keys": published}, separators=(",", ":")).encode()

    @property
    def current(self) -> SigningKey:
        """The key that signs now."""
        self._maybe_reload()
        keys = self._keys  # once: another thread may swap the list in between
        if not keys:
            raise NoSigningKey(
                f"no signing key in {self.keys_dir}: run `token-service keys generate`"
            )
        return keys[0]

    def jwks_json(self) -> bytes:
        """Serialized JWKS: the keys a verifier must accept now."""
        self._maybe_reload()
        return self._jwks_json

    def decode(self, token: str, typ: str = ACCESS_TOKEN_TYPE) -> dict | None:
        """Claims of a token of type `typ` (an access token unless told) signed by one of our
        keys, else None. Checks the header, the signature and the claims' types
        (`jose.well_formed`), not their values: the caller checks issuer, expiry and
        revocation. Only access tokens are cached, so that a token of another type never
        comes back from the cache as one."""
        self._maybe_reload()
        cached = typ == ACCESS_TOKEN_TYPE
        claims = self._verified.get(token) if cached else None
        if claims is not None:
            return dict(claims)
        generation = self._generation
        try:
            signed = jose.extract(token, _REGISTRY)
            alg, kid = jose.header_of(signed, (typ,))
            key = self._by_kid.get(kid)
            if key is None or alg != key.alg:
                return None
            claims = jose.verified_claims(signed, key.key, key.registry)
        except jose.UNTRUSTED_INPUT_ERRORS:
            return None
        if not jose.well_formed(claims):
            return None
        if cached and type(claims.get("exp")) is int:
            self._verified.put(token, dict(claims), expires_at=claims["exp"])
            if self._generation != generation:  # the keys changed meanwhile
                self._verified.pop(token)
        return claims

    def all_keys(self) -> list[SigningKey]:
        self._maybe_reload()
        return list(self._keys)

    def generate(self, alg: str) -> SigningKey:
        """Write a new private key (mode 0600); it signs from now on."""
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        path = self.keys_dir / f"{datetime.now(UTC).strftime(STAMP)}-{alg}.pem"
        while path.exists():  # same microsecond: try the next one
            path = self.keys_dir / f"{datetime.now(UTC).strftime(STAMP)}-{alg}.pem"
        pem = generate_private_key(alg).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        with self._lock:
            self._reload()
            self._mtime_ns = self.keys_dir.stat().st_mtime_ns
        return self._keys[0]

    def prune(self) -> list[Path]:
        """Delete keys that are no longer published; returns the deleted paths."""
        self._maybe_reload()
        published = {k["kid"] for k in json.loads(self._jwks_json)["keys"]}
        removed = [k.path for k in self._keys if k.kid not in published]
        for path in removed:
            path.unlink(missing_ok=True)
        with self._lock:
            self._reload()
        return removed
