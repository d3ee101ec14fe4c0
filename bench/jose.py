"""Signing and verification through the service's own interfaces, for each algorithm:
`KeyRing.current.encode_jwt` (one per token response), `KeyRing.decode` of a token it has not
seen (introspection's first sight of a token) and of one it has (later sights), and the resource
kit's `Verifier.verify`, likewise. Prints one JSON line per algorithm: CPU microseconds per
call, the best of many short batches (on a shared machine the best batch is the one least
disturbed), and the raw `cryptography` sign and verify the library calls wrap.

The interfaces are stable, so the same script measures another checkout of the code, in the
same process, batch by batch in turn with this one (a shared machine's load then falls on both
alike), and prints each figure for both and their ratio:

    .venv/bin/python bench/jose.py [batches, default 30]
    git worktree add --detach /tmp/before main
    .venv/bin/python bench/jose.py --against /tmp/before
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import shutil
import sys
import tempfile
import time
import timeit
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

import token_service.keys as keys_module
import token_service.resource as resource_module

ISSUER = "http://issuer.test"


def cpu_us(fn, number: int) -> float:
    """Microseconds of this process's CPU time per call, over `number` calls. CPU time, not
    wall time: on a shared machine the wall clock also counts the time other processes ran."""
    return timeit.Timer(fn, timer=time.process_time).timeit(number) / number * 1e6


def best_us(fn, batches: int, number: int) -> float:
    """Microseconds per call in the fastest of `batches` batches of `number` calls."""
    return round(min(cpu_us(fn, number) for _ in range(batches)), 1)


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


def operations(keys, resource, keys_dir: Path, alg: str) -> dict:
    """The measured calls of one version of the code (its `keys` and `resource` modules)."""
    ring = keys.KeyRing(keys_dir, 3600)
    key = ring.current
    assert key.alg == alg
    token_claims = claims("j" * 22)
    token = key.encode_jwt(token_claims)
    head, payload, signature = token.split(".")
    raw_sign, raw_verify = raw(
        key, alg, f"{head}.{payload}".encode(), base64.urlsafe_b64decode(signature + "==")
    )
    jwks = json.loads(ring.jwks_json())
    verifier = resource.Verifier(ISSUER, "commerce-api", resource.JWKSCache(jwks=jwks))
    # Forgetting what was verified (implementation details, cheap to reset) makes a call a
    # first sight. Older code had no such cache in the verifier: every call verified.
    forget_decoded = ring._verified.clear
    forget_verified = getattr(verifier, "_verified", None)
    forget_verified = forget_verified.clear if forget_verified is not None else lambda: None

    def decode_fresh() -> None:
        forget_decoded()
        ring.decode(token)

    def verify_fresh() -> None:
        forget_verified()
        verifier.verify(token)

    assert ring.decode(token) is not None and verifier.verify(token).sub == "cus_1"
    return {
        "raw_sign": raw_sign,
        "sign": lambda: key.encode_jwt(token_claims),
        "raw_verify": raw_verify,
        "decode_fresh": decode_fresh,
        "decode_again": lambda: ring.decode(token),
        "verifier_fresh": verify_fresh,
        "verifier_again": lambda: verifier.verify(token),
    }


def calls_per_batch(alg: str, name: str) -> int:
    return (50 if alg == "RS256" else 100) * (20 if name.endswith("_again") else 1)


def measure(alg: str, batches: int) -> dict:
    ops = operations(keys_module, resource_module, new_keys_dir(alg), alg)
    figures = {"alg": alg}
    for name, fn in ops.items():
        figures[f"{name}_us"] = best_us(fn, batches, calls_per_batch(alg, name))
    return figures


def compare(alg: str, batches: int, before) -> dict:
    """This code against `before`, batch by batch in turn, on one key: the machine's load
    falls on both alike. Ratios are this code's time over the other's (below 1: faster)."""
    keys_dir = new_keys_dir(alg)
    sides = {
        "after": operations(keys_module, resource_module, keys_dir, alg),
        "before": operations(*before, keys_dir, alg),
    }
    times = {side: {name: [] for name in ops} for side, ops in sides.items()}
    for _ in range(batches):
        for name in sides["after"]:
            number = calls_per_batch(alg, name)
            for side, ops in sides.items():
                times[side][name].append(cpu_us(ops[name], number))
    figures = {"alg": alg}
    for name in sides["after"]:
        after, before_ = min(times["after"][name]), min(times["before"][name])
        figures[name] = {"before_us": round(before_, 1), "after_us": round(after, 1)}
        figures[name]["ratio"] = round(after / before_, 2)
    return figures


def new_keys_dir(alg: str) -> Path:
    path = Path(tempfile.mkdtemp())
    keys_module.KeyRing(path, 3600).generate(alg)
    return path


def load_checkout(checkout: Path):
    """`keys` and `resource` of another checkout's token_service, imported under another
    name so that both versions live in this process."""
    copy = Path(tempfile.mkdtemp()) / "token_service_before"
    shutil.copytree(checkout / "token_service", copy)
    sys.path.insert(0, str(copy.parent))
    return (
        importlib.import_module("token_service_before.keys"),
        importlib.import_module("token_service_before.resource"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("batches", nargs="?", type=int, default=30)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    before = load_checkout(args.against) if args.against else None
    for alg in ("RS256", "ES256", "EdDSA"):
        figures = compare(alg, args.batches, before) if before else measure(alg, args.batches)
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
