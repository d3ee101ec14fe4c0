"""Secrets at rest: argon2id for passwords, SHA-256 for refresh tokens, a keyed hash for client
secrets. Every comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet minimum for argon2id: m=19 MiB, t=2, p=1.
PASSWORD_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

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
    try:
        with _HASHING:
            matches = PASSWORD_HASHER.verify(password_hash or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
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
