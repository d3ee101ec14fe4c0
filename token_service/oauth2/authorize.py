"""The authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OpenID Connect Core §3.1.2.1),
validated without the HTTP: query parameters in, an AuthorizationRequest or an error out.

Written here rather than on authlib's AuthorizationServer: that framework owns the token
endpoint too (its grants, request wrappers and client model), and ours is TokenEndpoint. The
checks follow authlib's AuthorizationCodeGrant and CodeChallenge; the PKCE rules and patterns
are authlib's (rfc7636), and so are the error classes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import (
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedResponseTypeError,
)
from authlib.oauth2.rfc7636.challenge import CODE_CHALLENGE_PATTERN

from ..clients import ClientInfo
from ..inputs import ascii_int, text_problem
from ..scopes import join_scopes, split_scopes
from .request import describe

PROMPTS = frozenset({"none", "login", "consent", "select_account"})
MAX_LENGTH = 2048


class AuthorizationPageError(Exception):
    """RFC 6749 §4.1.2.1: "If the request fails due to a missing, invalid, or mismatching
    redirection URI, or if the client identifier is missing or invalid, the authorization
    server SHOULD inform the resource owner of the error and MUST NOT automatically redirect
    the user-agent to the invalid redirection URI." Shown as a page, never redirected."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LoginRequired(OAuth2Error):
    """OpenID Connect Core §3.1.2.6."""

    error = "login_required"


class ConsentRequired(OAuth2Error):
    error = "consent_required"


class AccessDenied(OAuth2Error):
    error = "access_denied"


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request: errors from here on are redirected to
    `redirect_uri` (an exact registered one)."""

    params: dict[str, str]
    client: ClientInfo
    redirect_uri: str
    scope: frozenset[str]
    code_challenge: str
    state: str | None
    nonce: str | None
    prompt: frozenset[str]
    max_age: int | None
    login_hint: str | None
    legal_entity_id: str | None

    def encoded(self) -> str:
        """The request as the pages carry it between steps (validated again on each POST)."""
        return urlencode(self.params)

    def after_login(self) -> AuthorizationRequest:
        """The request once the customer has just signed in: prompt=login and max_age hold."""
        done = self.without_prompt("login")
        params = {k: v for k, v in done.params.items() if k != "max_age"}
        return replace(done, params=params, max_age=None)

    def without_prompt(self, value: str) -> AuthorizationRequest:
        """The request once a prompt (login, select_account) has been answered."""
        prompt = self.prompt - {value}
        params = {k: v for k, v in self.params.items() if k != "prompt"}
        if prompt:
            params["prompt"] = " ".join(sorted(prompt))
        return replace(self, params=params, prompt=prompt)

    def with_entity(self, legal_entity_id: str) -> AuthorizationRequest:
        """The picker's choice, carried as the `legal_entity_id` parameter it stands for."""
        return replace(
            self,
            params={**self.params, "legal_entity_id": legal_entity_id},
            legal_entity_id=legal_entity_id,
        )

    def redirect(self, issuer: str, **params: str) -> str:
        """The authorization response (§4.1.2) or error (§4.1.2.1), with `state` and, as
        RFC 9207 asks, `iss`."""
        if self.state is not None:
            params["state"] = self.state
        params["iss"] = issuer
        return add_params_to_uri(self.redirect_uri, list(params.items()))

    def error_redirect(self, issuer: str, error: OAuth2Error) -> str:
        params = {"error": error.error}
        if error.description:
            params["error_description"] = error.description
        return self.redirect(issuer, **params)


def decode(encoded: str) -> list[tuple[str, str]]:
    """The pairs of a request carried by a page (see AuthorizationRequest.encoded)."""
    try:
        return parse_qsl(encoded, keep_blank_values=True, max_num_fields=32, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise AuthorizationPageError("The sign-in request is malformed.") from None


def parse(
    pairs: list[tuple[str, str]], load_client
) -> tuple[AuthorizationRequest, OAuth2Error | None]:
    """Validate an authorization request. Raises AuthorizationPageError while the client or
    the redirect URI is in doubt; after that, returns the request and the error to redirect
    with (None when valid)."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            # "Request and response parameters MUST NOT be included more than once." (§3.1)
            if name in ("client_id", "redirect_uri"):
                raise AuthorizationPageError(f"'{name}' is repeated.")
            params["__repeated__"] = name
            continue
        if len(value) > MAX_LENGTH or text_problem(value) or text_problem(name):
            if name in ("client_id", "redirect_uri"):
                raise AuthorizationPageError(f"'{name}' is invalid.")
            params["__invalid__"] = name
            continue
        if value != "":  # "Parameters sent without a value MUST be treated as if they were
            params[name] = value  # omitted from the request." (§3.1)
    client_id = params.get("client_id")
    client = load_client(client_id) if client_id else None
    if client is None:
        raise AuthorizationPageError("Unknown client. The link you followed is not valid.")
    redirect_uri = params.get("redirect_uri")
    # "...the authorization server MUST compare ... using simple string comparison" (§3.1.2.3
    # via RFC 9700 §4.1.3: exact matching).
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise AuthorizationPageError("This redirect URI is not registered for the client.")

    request = AuthorizationRequest(
        params={k: v for k, v in params.items() if not k.startswith("__")},
        client=client,
        redirect_uri=redirect_uri,
        scope=frozenset(),
        code_challenge="",
        state=params.get("state"),
        nonce=params.get("nonce"),
        prompt=frozenset(),
        max_age=None,
        login_hint=params.get("login_hint"),
        legal_entity_id=params.get("legal_entity_id"),
    )
    try:
        return _check(request, params), None
    except OAuth2Error as error:
        return request, error


def _check(request: AuthorizationRequest, params: dict[str, str]) -> AuthorizationRequest:
    if "__repeated__" in params:
        raise InvalidRequestError(f"{describe(params['__repeated__'])} is repeated.")
    if "__invalid__" in params:
        raise InvalidRequestError(f"{describe(params['__invalid__'])} is too long or invalid.")
    response_type = params.get("response_type")
    if response_type is None:
        raise InvalidRequestError("Missing 'response_type' parameter.")
    if response_type != "code":
        raise UnsupportedResponseTypeError("Only response_type=code is supported.")
    if "authorization_code" not in request.client.grant_types.split():
        raise UnauthorizedClientError("The client may not use the authorization code grant.")
    if params.get("response_mode", "query") != "query":
        raise InvalidRequestError("Only response_mode=query is supported.")
    for name in ("request", "request_uri"):
        if name in params:
            raise InvalidRequestError(f"'{name}' is not supported.")
    # RFC 7636 §4.4.1 and RFC 9700 §2.1.1: PKCE for every client, S256 only ("plain" is the
    # default method, so a missing method is refused too).
    challenge = params.get("code_challenge")
    if challenge is None:
        raise InvalidRequestError("PKCE is required: send 'code_challenge' (S256).")
    if params.get("code_challenge_method") != "S256":
        raise InvalidRequestError("Only code_challenge_method=S256 is supported.")
    if not CODE_CHALLENGE_PATTERN.fullmatch(challenge):
        raise InvalidRequestError("Invalid 'code_challenge'.")
    ceiling = split_scopes(request.client.scope)
    asked = params.get("scope")
    scope = ceiling if asked is None else split_scopes(asked)
    if not scope <= ceiling:
        raise InvalidScopeError("The requested scope exceeds what the client may hold.")
    prompt = split_scopes(params.get("prompt"))
    if not prompt <= PROMPTS:
        raise InvalidRequestError("Unsupported 'prompt' value.")
    if "none" in prompt and len(prompt) > 1:
        # OpenID Connect Core §3.1.2.1: none "MUST NOT" be combined with another value.
        raise InvalidRequestError("prompt=none cannot be combined with other values.")
    max_age = params.get("max_age")
    seconds = None if max_age is None else ascii_int(max_age)
    if max_age is not None and seconds is None:
        raise InvalidRequestError("'max_age' must be a number of seconds.")
    return replace(
        request,
        scope=frozenset(scope),
        code_challenge=challenge,
        prompt=prompt,
        max_age=seconds,
    )


def scope_string(request: AuthorizationRequest) -> str:
    return join_scopes(request.scope)
