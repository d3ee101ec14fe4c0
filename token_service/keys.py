"""Signing keys: load the PEM files in the keys directory, sign access tokens, publish the JWKS.

The newest file signs. An older key stays published until every token it can have signed has
expired: its successor's creation time plus the longest access-token lifetime. Every worker
notices a new file within a second (one stat of the directory per second at most).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .expiring import ExpiringMap

STAMP = "%Y%m%dT%H%M%S%fZ"  # microseconds: names sort in creation order


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _int_b64(n: int, length: int | None = None) -> str:
    return b64url(n.to_bytes(length or (n.bit_length() + 7) // 8, "big"))


def public_jwk(private_key) -> dict:
    """The RFC 7517 public JWK (required members only) of a private key."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        numbers = private_key.public_key().public_numbers()
        return {"e": _int_b64(numbers.e), "kty": "RSA", "n": _int_b64(numbers.n)}
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        numbers = private_key.public_key().public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": _int_b64(numbers.x, 32),
            "y": _int_b64(numbers.y, 32),
        }
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}
    raise ValueError(f"unsupported key type {type(private_key).__name__}")


def thumbprint(jwk: dict) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace."""
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {k: jwk[k] for k in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def generate_private_key(alg: str):
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported alg {alg}")


def alg_of(private_key) -> str:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        return "ES256"
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"unsupported key type {type(private_key).__name__}")


@dataclass(frozen=True)
class SigningKey:
    """One private key, its public JWK and precomputed JWT header."""

    kid: str
    alg: str
    created_at: datetime
    path: Path
    private_key: object
    jwk: dict
    header_b64: str

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        alg = alg_of(private_key)
        jwk = public_jwk(private_key)
        kid = thumbprint(jwk)
        header = {"alg": alg, "kid": kid, "typ": "at+jwt"}
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
            jwk={**jwk, "kid": kid, "alg": alg, "use": "sig"},
            header_b64=b64url(json.dumps(header, separators=(",", ":")).encode()),
        )

    def sign(self, signing_input: bytes) -> bytes:
        key = self.private_key
        if self.alg == "RS256":
            return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        if self.alg == "ES256":
            r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return key.sign(signing_input)

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Check a signature made by this key (for introspection and revocation)."""
        public = self.private_key.public_key()
        try:
            if self.alg == "RS256":
                public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            elif self.alg == "ES256":
                if len(signature) != 64:
                    return False
                der = encode_dss_signature(
                    int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                )
                public.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            else:
                public.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    def encode_jwt(self, claims: dict, typ: str = "at+jwt") -> str:
        """Compact JWS of `claims` with header {alg, kid, typ} (at+jwt: an access token)."""
        header_b64 = self.header_b64
        if typ != "at+jwt":
            header = {"alg": self.alg, "kid": self.kid, "typ": typ}
            header_b64 = b64url(json.dumps(header, separators=(",", ":")).encode())
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header_b64}.{payload}".encode("ascii")
        return f"{header_b64}.{payload}.{b64url(self.sign(signing_input))}"


VERIFIED_CACHE_SIZE = 4096


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
        self._keys = [loaded[p] for p in paths]  # one assignment: readers see old or new
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

    def decode(self, token: str, typ: str = "at+jwt") -> dict | None:
        """Claims of a JWT signed by one of our keys, else None. Checks the signature and
        `typ` only: the caller checks expiry and revocation. Only access tokens (at+jwt) are
        cached, so that a token of another type never comes back from the cache as one."""
        self._maybe_reload()
        cached = typ == "at+jwt"
        claims = self._verified.get(token) if cached else None
        if claims is not None:
            return dict(claims)
        generation = self._generation
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(_b64decode(header_b64))
            if not isinstance(header, dict) or header.get("typ") != typ:
                return None
            key = next((k for k in self._keys if k.kid == header.get("kid")), None)
            if key is None or header.get("alg") != key.alg:
                return None
            signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
            if not key.verify(signing_input, _b64decode(signature_b64)):
                return None
            claims = json.loads(_b64decode(payload_b64))
        except (ValueError, UnicodeError):
            return None
        if not isinstance(claims, dict):
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
