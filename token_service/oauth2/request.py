"""Parsing a token-endpoint request and authenticating its client (RFC 6749 §2.3, §3.2)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_plus

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError

from ..inputs import text_problem
from ..security import verify_client_secret

MAX_PARAM_LENGTH = {
    "username": 320,
    "password": 1024,
    "legal_entity_id": 64,
    "client_id": 128,
    "scope": 2048,
    "refresh_token": 256,
    "token": 4096,
}
DEFAULT_MAX_LENGTH = 4096
#: Credentials that are hashed or verified, never looked up as sent: only a NUL is refused in
#: them here, so that a token that is merely wrong (a stray newline) stays an invalid token
#: (`{"active": false}`, `invalid_grant`) rather than a malformed request. Every other value,
#: an identifier or a name, may hold no control character at all (inputs.text_problem).
OPAQUE = frozenset({"token", "refresh_token", "code", "code_verifier", "password", "client_secret"})
# No grant needs more than a handful; a bound keeps a body of 8 kB from being 4,000 parameters.
MAX_PARAMS = 32
_SAFE_NAME = re.compile(r"[a-z_]{1,32}")


def describe(name: str) -> str:
    """A parameter name fit for error_description (RFC 6749 §5.2 allows only printable
    ASCII without '"' and '\\'): unknown or odd names are not echoed."""
    return f"'{name}'" if _SAFE_NAME.fullmatch(name) else "A parameter"


@dataclass
class TokenRequest:
    """What the protocol layer needs of an HTTP request, already validated for form."""

    params: dict[str, str]
    authorization: str | None = None
    remote_addr: str | None = None
    client: object | None = field(default=None)  # storage.ClientInfo once authenticated
    auth_method: str | None = None

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    def require(self, name: str) -> str:
        value = self.params.get(name)
        if value is None:
            raise InvalidRequestError(f"Missing '{name}' parameter.")
        return value


def parse_form(content_type: str | None, body: bytes, max_bytes: int) -> dict[str, str]:
    """RFC 6749 §3.2: form-encoded UTF-8 body, no parameter twice; blank means omitted."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if mimetype != "application/x-www-form-urlencoded":
        raise InvalidRequestError("The request body must be application/x-www-form-urlencoded.")
    if len(body) > max_bytes:
        raise InvalidRequestError(f"The request body exceeds {max_bytes} bytes.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("The request body is not valid UTF-8.") from None
    # Counted as parse_qsl splits (empty pieces skipped): its own limit would raise the same
    # ValueError as bad percent-encoding, and the client deserves to know which it was.
    if sum(1 for piece in text.split("&") if piece) > MAX_PARAMS:
        raise InvalidRequestError(f"The request has more than {MAX_PARAMS} parameters.")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("A parameter is not valid percent-encoded UTF-8.") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        # "Request and response parameters MUST NOT be included more than once." (§3.2)
        if name in params:
            raise InvalidRequestError(f"{describe(name)} is repeated.")
        if len(value) > MAX_PARAM_LENGTH.get(name, DEFAULT_MAX_LENGTH):
            raise InvalidRequestError(f"{describe(name)} is too long.")
        if "\x00" in value or text_problem(name) or (name not in OPAQUE and text_problem(value)):
            raise InvalidRequestError(f"{describe(name)} contains a control character.")
        params[name] = value
    # "Parameters sent without a value MUST be treated as if they were omitted." (§3.1)
    return {name: value for name, value in params.items() if value != ""}


def basic_credentials(authorization: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded, then joined by ':' and base64ed."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise InvalidClientError(status_code=401, description="Unsupported Authorization scheme.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClientError(
            status_code=401, description="Malformed Basic credentials."
        ) from None
    client_id, sep, secret = decoded.partition(":")
    client_id, secret = unquote_plus(client_id), unquote_plus(secret)
    # A client id no client can have (a NUL, a control character) is refused here, before
    # any query: PostgreSQL would refuse the NUL as a DataError, which is no outage.
    if not sep or not client_id or text_problem(client_id) or text_problem(secret):
        raise InvalidClientError(status_code=401, description="Malformed Basic credentials.")
    return client_id, secret


def authenticate_client(request: TokenRequest, load_client):
    """Authenticate by client_secret_basic, client_secret_post or none (public clients).

    `load_client(client_id)` returns a client (storage.ClientInfo) or None. Failures are
    `invalid_client` with 401 and `WWW-Authenticate: Basic` whatever the method tried: §5.2
    requires it for the Authorization header and allows it otherwise, and one answer tells an
    attacker less.
    """
    form_id, form_secret = request.get("client_id"), request.get("client_secret")
    if request.authorization:
        # "The client MUST NOT use more than one authentication method in each request." (§2.3)
        if form_secret is not None:
            raise InvalidRequestError("Use one client authentication method, not two.")
        client_id, secret = basic_credentials(request.authorization)
        if form_id is not None and form_id != client_id:
            raise InvalidRequestError("'client_id' does not match the Authorization header.")
        method = "client_secret_basic"
    elif form_secret is not None:
        client_id, secret, method = form_id, form_secret, "client_secret_post"
    else:
        client_id, secret, method = form_id, None, "none"
    if not client_id:
        raise InvalidClientError(status_code=401, description="Client authentication is required.")

    client = load_client(client_id)
    if method == "none":
        authenticated = client is not None and client.is_public
    else:
        authenticated = (
            client is not None
            and not client.is_public
            and verify_client_secret(client.secret_hash, secret)
        )
    if not authenticated:
        raise InvalidClientError(status_code=401, description="Client authentication failed.")
    request.client, request.auth_method = client, method
    return client
