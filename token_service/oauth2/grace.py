"""Grace responses: the successor of a just-rotated refresh token, kept for a few seconds so that
a retried request or a second tab gets the same answer instead of logging the buyer out.

The response is encrypted (AES-256-GCM) under a key derived (HKDF-SHA-256) from the presented
refresh token, which the store never sees: reading Redis gives no usable token. The store key is
a separate hash of the token, so it does not match the database's hash either.
"""

from __future__ import annotations

import hashlib
import json
import os

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _key(token: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"token-service/grace/v1"
    ).derive(token.encode())


def store_key(token: str, successor_hash: str) -> str:
    """One key per rotation attempt: only the attempt that won is ever looked up, through the
    successor recorded on the consumed row."""
    digest = hashlib.sha256(b"grace\x00" + token.encode()).hexdigest()
    return f"grace:{digest}:{successor_hash[:32]}"


def fingerprint(client_id: str, legal_entity_id: str | None, scope: str | None) -> str:
    """The request parameters that must match for a replay to get the stored response."""
    return json.dumps([client_id, legal_entity_id, scope])


def seal(token: str, params: str, response: dict) -> bytes:
    nonce = os.urandom(12)
    plaintext = orjson.dumps({"params": params, "response": response})
    return nonce + AESGCM(_key(token)).encrypt(nonce, plaintext, b"grace")


def open_sealed(token: str, blob: bytes) -> tuple[str, dict] | None:
    """(params, response), or None if the blob was not sealed under this token."""
    try:
        data = orjson.loads(AESGCM(_key(token)).decrypt(blob[:12], blob[12:], b"grace"))
    except (InvalidTag, ValueError):
        return None
    return data["params"], data["response"]
