"""Secrets at rest: argon2id for passwords, SHA-256 for refresh tokens, a keyed hash for client
secrets. Every comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from nacl import pwhash
from nacl.exceptions import InvalidkeyError


class Argon2id:
    """argon2id (RFC 9106) in PHC string format, computed by libsodium (PyNaCl, PyCA's binding).

    libsodium picks the fastest implementation the CPU has (AVX-512, AVX2, SSSE3) at run time:
    the same hash, measured 1.7 x as many verifications per second on one core as argon2-cffi's
    portable build (docs/performance.md). It verifies any argon2id or argon2i PHC string,
    whatever its parameters, so hashes written before (argon2-cffi, the same format) still
    verify, and are rewritten with these parameters at the next login (`check_needs_rehash`)."""

    parallelism = 1  # libsodium computes one lane

    def __init__(self, time_cost: int, memory_kib: int) -> None:
        self.time_cost, self.memory_kib = time_cost, memory_kib
        # libsodium's strings are canonical: the parameters are this exact prefix.
        self._prefix = f"$argon2id$v=19$m={memory_kib},t={time_cost},p={self.parallelism}$"

    def hash(self, password: str) -> str:
        return pwhash.argon2id.str(
            password.encode(), opslimit=self.time_cost, memlimit=self.memory_kib * 1024
        ).decode()

    def verify(self, password_hash: str, password: str) -> bool:
        """True if it matches; False for a mismatch and for a string that is no argon2 hash
        (libsodium refuses those the same way, and strings over 127 bytes before looking)."""
        try:
            return pwhash.argon2id.verify(password_hash.encode(), password.encode())
        except (InvalidkeyError, ValueError):
            return False

    def check_needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(self._prefix)


# OWASP Password Storage Cheat Sheet minimum for argon2id: m=19 MiB, t=2, p=1.
PASSWORD_HASHER = Argon2id(time_cost=2, memory_kib=19456)

# Verified when the email is unknown, so that both failures cost one argon2id verification.
_DUMMY_HASH = PASSWORD_HASHER.hash(secrets.token_urlsafe(16))

# One argon2id computation at a time per process. A worker has a core's worth of CPU (the
# sizing rule: one worker per vCPU), and hashes that run at once on it only take turns and
# evict each other's 19 MiB from the cache: serialised, four logins at a time on one worker took
# 0.80 x the CPU each and answered 1.24 x as many per second (docs/performance.md).
_HASHING = threading.Lock()

# Client secrets are 256-bit random strings, so a fast hash is enough; the key (domain
# separation, not a secret) keeps these digests distinct from any other SHA-256 in the database.
_CLIENT_SECRET_KEY = b"token-service/client-secret/v1"


def hash_password(password: str) -> str:
    """argon2id hash in PHC string format."""
    with _HASHING:
        return PASSWORD_HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; a missing hash still costs one verification."""
    with _HASHING:
        matches = PASSWORD_HASHER.verify(password_hash or _DUMMY_HASH, password)
    return matches and bool(password_hash)


def new_token(nbytes: int = 32) -> str:
    """A fresh opaque token or secret: `nbytes` of randomness, base64url."""
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """SHA-256 hex of a refresh token: what the database stores and looks up."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_client_secret(secret: str) -> str:
    """Keyed hash (HMAC-SHA-256) of a client secret."""
    return hmac.new(_CLIENT_SECRET_KEY, secret.encode(), hashlib.sha256).hexdigest()


def verify_client_secret(secret_hash: str | None, secret: str) -> bool:
    """Constant-time check of a presented client secret."""
    if not secret_hash:
        return False
    return hmac.compare_digest(secret_hash, hash_client_secret(secret))
