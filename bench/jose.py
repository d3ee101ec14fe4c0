"""Signing and verification through the service's own interfaces, for each algorithm:
`KeyRing.current.encode_jwt` (one per token response), `KeyRing.decode` of a token it has not
seen (introspection's first sight of a token) and of one it has (later sights), and the resource
kit's `Verifier.verify`, likewise. Prints one JSON line per algorithm: microseconds per call,
the best of many short batches (on a shared machine the best batch is the one least disturbed),
and the raw `cryptography` sign and verify the library calls wrap.

The interfaces are stable, so the same script measures another checkout of the code:

    .venv/bin/python bench/jose.py [batches, default 30]
    PYTHONPATH=/tmp/other-checkout .venv/bin/python bench/jose.py
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
import timeit
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from token_service.keys import KeyRing
from token_service.resource import JWKSCache, Verifier

ISSUER = "http://issuer.test"


def best_us(fn, batches: int, number: int) -> float:
    """Microseconds per call in the fastest of `batches` batches of `number` calls."""
    return round(min(timeit.repeat(fn, number=number, repeat=batches)) / number * 1e6, 1)


def claims(jti: str) -> dict:
    now = int(time.time())
    return {
        "iss": ISSUER,
        "sub": "cus_1",
        "aud": "commerce-api",
        "exp": now + 3600,
        "iat": now,
        "jti": jti,
        "client_id": "storefront",
        "sid": "sid_1",
        "auth_time": now,
        "legal_entity_id": "acme",
        "scope": "order.history_view order.order_read_le",
    }


def raw(key, alg: str, signing_input: bytes, signature: bytes):
    """The `cryptography` calls alone: the floor under any JOSE code."""
    private, public = key.private_key, key.private_key.public_key()
    if alg == "RS256":
        args = (padding.PKCS1v15(), hashes.SHA256())
        return (
            lambda: private.sign(signing_input, *args),
            lambda: public.verify(signature, signing_input, *args),
        )
    if alg == "ES256":
        der = private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        return (
            lambda: private.sign(signing_input, ec.ECDSA(hashes.SHA256())),
            lambda: public.verify(der, signing_input, ec.ECDSA(hashes.SHA256())),
        )
    return lambda: private.sign(signing_input), lambda: public.verify(signature, signing_input)


def measure(alg: str, batches: int) -> dict:
    ring = KeyRing(Path(tempfile.mkdtemp()), 3600)
    ring.generate(alg)
    key = ring.current
    token_claims = claims("j" * 22)
    token = key.encode_jwt(token_claims)
    head, payload, signature = token.split(".")
    raw_sign, raw_verify = raw(
        key, alg, f"{head}.{payload}".encode(), base64.urlsafe_b64decode(signature + "==")
    )
    verifier = Verifier(ISSUER, "commerce-api", JWKSCache(jwks=json.loads(ring.jwks_json())))
    # Forgetting what was verified (implementation details, cheap to reset) makes a call a
    # first sight. Older code had no such cache in the verifier: every call verified.
    forget_decoded = ring._verified.clear
    forget_verified = getattr(verifier, "_verified", None)
    forget_verified = forget_verified.clear if forget_verified is not None else lambda: None
    number = 50 if alg == "RS256" else 100

    def decode_fresh() -> None:
        forget_decoded()
        ring.decode(token)

    def verify_fresh() -> None:
        forget_verified()
        verifier.verify(token)

    assert ring.decode(token) is not None and verifier.verify(token).sub == "cus_1"
    return {
        "alg": alg,
        "raw_sign_us": best_us(raw_sign, batches, number),
        "sign_us": best_us(lambda: key.encode_jwt(token_claims), batches, number),
        "raw_verify_us": best_us(raw_verify, batches, number),
        "decode_fresh_us": best_us(decode_fresh, batches, number),
        "decode_again_us": best_us(lambda: ring.decode(token), batches, number * 20),
        "verifier_fresh_us": best_us(verify_fresh, batches, number),
        "verifier_again_us": best_us(lambda: verifier.verify(token), batches, number * 20),
    }


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for alg in ("RS256", "ES256", "EdDSA"):
        print(json.dumps(measure(alg, batches)), flush=True)


if __name__ == "__main__":
    main()
