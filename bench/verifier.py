"""Verifications per second, measured in one run: raw `cryptography` RS256 verification of the
same signing input, token_service.resource's Verifier doing every check (on joserfc) for a token
it has not seen and for one it has verified before (its cache of verified tokens), and PyJWT
doing the same checks with a PyJWK key. Prints one JSON line with the figures and the ratios.

    .venv/bin/python bench/verifier.py [seconds per measurement, default 2]
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from token_service.keys import KeyRing
from token_service.resource import JWKSCache, Verifier

ISSUER = "http://issuer.test"


def rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            fn()
        n += 200
    return n / elapsed


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    ring = KeyRing(Path(tempfile.mkdtemp()), 3600)
    key = ring.generate("RS256")
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "cus_1",
        "aud": "commerce-api",
        "exp": now + 3600,
        "iat": now,
        "jti": "j" * 22,
        "client_id": "storefront",
        "sid": "sid_1",
        "auth_time": now,
        "legal_entity_id": "acme",
        "scope": "order.history_view order.order_read_le",
    }
    token = key.encode_jwt(claims)
    jwks = json.loads(ring.jwks_json())
    head, payload, sig = token.split(".")
    signing_input = f"{head}.{payload}".encode()
    signature = base64.urlsafe_b64decode(sig + "==")
    public = key.private_key.public_key()

    def raw() -> None:
        public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())

    verifier = Verifier(ISSUER, "commerce-api", JWKSCache(jwks=jwks))
    forget = verifier._verified.clear  # an implementation detail: makes a call a first sight

    def first_sight() -> None:
        forget()
        verifier.verify(token)

    pyjwk = jwt.PyJWK(jwks["keys"][0])

    def pyjwt() -> None:
        if jwt.get_unverified_header(token).get("typ") != "at+jwt":
            raise ValueError("typ")
        jwt.decode(
            token,
            pyjwk,
            algorithms=["RS256"],
            audience="commerce-api",
            issuer=ISSUER,
            leeway=30,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )

    figures = {
        "raw_cryptography_per_s": rate(raw, seconds),
        "verifier_per_s": rate(first_sight, seconds),
        "verifier_again_per_s": rate(lambda: verifier.verify(token), seconds),
        "pyjwt_per_s": rate(pyjwt, seconds),
    }
    figures["verifier_to_raw"] = figures["verifier_per_s"] / figures["raw_cryptography_per_s"]
    figures["verifier_to_pyjwt"] = figures["verifier_per_s"] / figures["pyjwt_per_s"]
    figures["again_to_raw"] = figures["verifier_again_per_s"] / figures["raw_cryptography_per_s"]
    print(json.dumps({k: round(v, 3 if "_to_" in k else 0) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
