"""Signing and verification per second through the service's own interfaces, for each algorithm:
`KeyRing.current.encode_jwt` (one per token response), `KeyRing.decode` of a token it has not
seen (introspection's first sight of a token; later sights hit the verified-token cache) and the
resource kit's `Verifier.verify`. Prints one JSON line per algorithm.

The interfaces are stable, so the same script measures another checkout of the code:

    .venv/bin/python bench/jose.py [seconds per measurement, default 1]
    PYTHONPATH=/tmp/other-checkout .venv/bin/python bench/jose.py
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from token_service.keys import KeyRing
from token_service.resource import JWKSCache, Verifier

ISSUER = "http://issuer.test"


def rate(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        n += 50
    return n / elapsed


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


def measure(alg: str, seconds: float) -> dict:
    ring = KeyRing(Path(tempfile.mkdtemp()), 3600)
    ring.generate(alg)
    key = ring.current
    counter = itertools.count()
    token = key.encode_jwt(claims("j" * 22))
    verifier = Verifier(ISSUER, "commerce-api", JWKSCache(jwks=json.loads(ring.jwks_json())))
    # Forgetting the verified tokens (an implementation detail, cheap to reset) makes every
    # decode a first sight.
    forget = ring._verified.clear

    def decode_fresh() -> None:
        forget()
        assert ring.decode(token) is not None

    def decode_again() -> None:
        assert ring.decode(token) is not None

    return {
        "alg": alg,
        "sign_per_s": round(rate(lambda: key.encode_jwt(claims(str(next(counter)))), seconds)),
        "decode_fresh_per_s": round(rate(decode_fresh, seconds)),
        "decode_cached_per_s": round(rate(decode_again, seconds)),
        "verifier_per_s": round(rate(lambda: verifier.verify(token), seconds)),
    }


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for alg in ("RS256", "ES256", "EdDSA"):
        print(json.dumps(measure(alg, seconds)), flush=True)


if __name__ == "__main__":
    main()
