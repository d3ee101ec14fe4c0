"""The JOSE rules the service and the resource kit share, on joserfc: which algorithms, which
keys, which headers, and what untrusted input may raise while it is parsed.

joserfc decodes base64url strictly (RFC 7515 §2: no padding, no character outside the
alphabet, no stray bits in the last character), so a token has exactly one spelling, and it
bounds the header (512 bytes) and the signature before parsing them, so a header nested
thousands deep never reaches the JSON parser.
"""

from __future__ import annotations

import json

from joserfc import jws
from joserfc.errors import BadSignatureError, DecodeError, InvalidHeaderValueError, JoseError
from joserfc.jwa import EdDSAAlgorithm
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

#: Asymmetric algorithms only: never `none`, never HMAC (a public key is no secret).
ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})

#: What parsing an untrusted token can raise, besides joserfc's own errors: ValueError covers
#: JSON, UTF-8 and base64 errors; RecursionError a JSON document nested too deep; TypeError
#: and KeyError a member of the wrong type or a missing one.
UNTRUSTED_INPUT_ERRORS = (JoseError, ValueError, TypeError, KeyError, RecursionError)


class _EdDSA(EdDSAAlgorithm):
    """RFC 8037's EdDSA, with Ed25519 keys only (`alg_of`, `public_key`). RFC 9864 deprecates
    the name for the fully specified "Ed25519", which verifiers do not all know yet; joserfc
    warns on every use, and our test run turns warnings into errors."""

    security_warning = None


class JWSRegistry(jws.JWSRegistry):
    """joserfc's registry with our three algorithms. Headers outside RFC 7515's registry are
    ignored, as §4 says; `crit`, which would make one of them binding, is refused by
    `header_of`."""

    algorithms = {**jws.JWSRegistry.algorithms, "EdDSA": _EdDSA()}

    def __init__(self, algorithms=ALLOWED_ALGORITHMS) -> None:
        algorithms = frozenset(algorithms)
        if not algorithms or not algorithms <= ALLOWED_ALGORITHMS:
            raise ValueError(f"algorithms must be a subset of {sorted(ALLOWED_ALGORITHMS)}")
        super().__init__(algorithms=sorted(algorithms), strict_check_header=False)


def alg_of(key: Key) -> str | None:
    """The algorithm a key signs with, or None for a key of another type or curve."""
    if isinstance(key, RSAKey):
        return "RS256"
    if isinstance(key, ECKey) and key.curve_name == "P-256":
        return "ES256"
    if isinstance(key, OKPKey) and key.curve_name == "Ed25519":
        return "EdDSA"
    return None


def public_key(jwk: dict) -> Key | None:
    """The joserfc public key of one JWKS member we can use to verify, else None: a signing
    key of one of our types, whose `alg`, if given, is the one its type implies."""
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or "d" in jwk:
        return None
    try:
        key = import_key(jwk)
    except UNTRUSTED_INPUT_ERRORS:
        return None
    alg = alg_of(key)
    if alg is None or jwk.get("alg", alg) != alg:
        return None
    return key


def extract(token: str, registry: JWSRegistry) -> jws.CompactSignature:
    """A compact JWS split and decoded, its signature not yet checked; raises on anything
    malformed (see UNTRUSTED_INPUT_ERRORS)."""
    return jws.extract_compact(token.encode("ascii"), registry=registry)


def header_of(signed: jws.CompactSignature, types: tuple[str, ...]) -> tuple[str, str]:
    """(alg, kid) of an acceptable protected header: an object whose `typ` (compared without
    case, RFC 7515 §4.1.9) is one of `types`, with a string `alg` and `kid` and no `crit`."""
    header = signed.headers()
    if not isinstance(header, dict):
        raise DecodeError("the header is not an object")
    typ, alg, kid = header.get("typ"), header.get("alg"), header.get("kid")
    if not isinstance(typ, str) or typ.lower() not in types:
        raise InvalidHeaderValueError("typ")
    if not isinstance(alg, str) or not isinstance(kid, str):
        raise InvalidHeaderValueError("alg, kid")
    # RFC 7515 §4.1.11: a recipient that does not understand a `crit` extension MUST reject
    # the JWS; we understand none (nor RFC 7797's unencoded payload, which needs one).
    if "crit" in header or "b64" in header:
        raise InvalidHeaderValueError("crit")
    return alg, kid


def verified_claims(signed: jws.CompactSignature, key: Key, registry: JWSRegistry) -> dict:
    """The JSON object a JWS carries, once its signature verifies with `key`."""
    if not jws.validate_compact(signed, key, registry=registry):
        raise BadSignatureError()
    claims = json.loads(signed.payload)
    if not isinstance(claims, dict):
        raise DecodeError("the payload is not an object")
    return claims


_MAX_TIME = 2**53


def well_formed(claims: dict) -> bool:
    """The claims each of our access tokens carries, with the types we give them (RFC 9068
    §2.2): integer times that JSON carries exactly (below 2**53, RFC 7493 §2.2), string
    identifiers, `aud` a string or a list of them. Only our keys sign, but what reads a token
    must never depend on that."""
    get = claims.get
    exp, iat, aud = get("exp"), get("iat"), get("aud")
    return (
        type(exp) is int
        and type(iat) is int
        and 0 <= iat < _MAX_TIME
        and 0 <= exp < _MAX_TIME
        and all(type(get(name)) is str for name in ("iss", "sub", "jti", "client_id"))
        and type(get("scope", "")) is str
        and all(type(get(name, "")) is str for name in ("sid", "legal_entity_id"))
        and (type(aud) is str or (type(aud) is list and all(type(a) is str for a in aud)))
    )
