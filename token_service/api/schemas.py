"""What the OpenAPI document says about the routes outside the admin API, in one vocabulary:
an `Endpoint` names its parameters, body and answers by pydantic model, and api/openapi.py
renders every endpoint the same way (the admin and self-service operations included).

Here too: the models of the public OAuth and discovery answers, of the form-encoded OAuth
requests (parsed by oauth2/request.py, whose bounds they reuse) and of the hosted pages' forms,
and the endpoints that no route table of ours declares: the token, introspection and revocation
endpoints (answered by api/front.py), discovery and health (api/public.py) and the hosted pages
(api/frontdoor.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..oauth2.request import MAX_PARAM_LENGTH
from .admin.errors import Error
from .admin.query import Param
from .admin.schema import ComponentSchema

# -- the vocabulary --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One documented answer. `body` is a model (a component schema), a list of one, an
    inline JSON Schema (for HTML and plain text), or None; `headers` maps a header to its
    description."""

    description: str
    body: type[BaseModel] | dict | None = None
    media: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One documented route: what api/openapi.py renders as an OpenAPI operation."""

    method: str
    path: str  # OpenAPI form: /iam/{tenant}/groups
    operation_id: str
    tag: str
    summary: str
    replies: dict[int, Reply]
    description: str = ""
    security: tuple[dict, ...] = ()  # () : no authentication
    path_params: tuple[Param, ...] = ()
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    media: str = "application/json"  # of the body


def params_of(model: type[BaseModel]) -> tuple[Param, ...]:
    """A model's fields as query parameters: their schemas, descriptions and whether they are
    required, so that the model that reads a query also documents it."""
    schema = model.model_json_schema(schema_generator=ComponentSchema)
    required = set(schema.get("required", ()))
    return tuple(
        Param(
            name,
            {k: v for k, v in prop.items() if k != "description"},
            prop.get("description", ""),
            name in required,
        )
        for name, prop in schema["properties"].items()
    )


class Document(BaseModel):
    """An answer that may gain members: clients ignore the ones they do not know (RFC 6749
    §5.1, RFC 7662 §2.2, RFC 8414 §3.2)."""


class Form(BaseModel):
    """A form-encoded request: strings only, empty means omitted (RFC 6749 §3.1)."""

    model_config = ConfigDict(extra="allow")


def _param(name: str, description: str = ""):
    """An optional form field, bounded as oauth2/request.py bounds it."""
    limit = MAX_PARAM_LENGTH.get(name, 4096)
    return Annotated[str, Field(max_length=limit, description=description or None)]


# -- the OAuth endpoints (RFC 6749, 7009, 7662) ----------------------------------------------

GrantType = Literal["authorization_code", "password", "refresh_token", "client_credentials"]


class TokenForm(Form):
    """A token request (RFC 6749 §4)."""

    grant_type: GrantType
    code: _param("code", "authorization_code grant: the code (single use).") = None
    redirect_uri: _param("redirect_uri", "authorization_code grant: as in the request.") = None
    code_verifier: _param("code_verifier", "authorization_code grant: PKCE (RFC 7636).") = None
    client_id: _param("client_id", "client_secret_post or public clients.") = None
    client_secret: _param("client_secret", "client_secret_post.") = None
    username: _param("username", "password grant: the customer's email.") = None
    password: _param("password", "password grant.") = None
    refresh_token: _param("refresh_token", "refresh_token grant.") = None
    scope: _param("scope", "Narrow the ceiling (space-separated).") = None
    legal_entity_id: _param(
        "legal_entity_id",
        "Act for this legal entity (password and refresh grants): a refresh with it switches "
        "company without a new login.",
    ) = None


class TokenHintForm(Form):
    """A token to revoke (RFC 7009 §2.1) or introspect (RFC 7662 §2.1)."""

    token: _param("token")
    token_type_hint: Literal["access_token", "refresh_token"] = None


class OAuthError(Document):
    """RFC 6749 §5.2."""

    error: str
    error_description: str = None
    error_uri: str = None


class TokenLegalEntity(BaseModel):
    """A legal entity the customer may act for."""

    id: str
    name: str


class TokenResponse(Document):
    """Tokens (RFC 6749 §5.1)."""

    access_token: Annotated[str, Field(description="An RFC 9068 JWT.")]
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    refresh_token: Annotated[
        str,
        Field(
            description="For a customer's session. A third-party client gets one from the code "
            "grant only if the customer consented to `offline_access` (OpenID Connect Core "
            "§11); first-party clients always do."
        ),
    ] = None
    refresh_token_expires_in: Annotated[
        int, Field(description="Seconds until the refresh token expires (idle or absolute).")
    ] = None
    id_token: Annotated[
        str,
        Field(
            description="OpenID Connect ID token, when the session's ceiling holds `openid`: "
            "from the code grant, and from a refresh (Core §12.2: the same `iss`, `sub`, "
            "`aud`, `azp`, `auth_time` and `sid`, a new `iat`, the current `legal_entity_id`, "
            "no `nonce`)."
        ),
    ] = None
    legal_entity_id: str | None = None
    legal_entities: Annotated[
        list[TokenLegalEntity],
        Field(
            description="The entities the customer may switch to: for first-party clients, and "
            "for others whose session was consented customermanagement.legalentity_read_own."
        ),
    ] = None


class Introspection(Document):
    """A token's state (RFC 7662 §2.2)."""

    active: bool
    token_type: str = None
    scope: str = None
    client_id: str = None
    sub: str = None
    exp: int = None
    iat: int = None
    iss: str = None
    aud: str | None = None
    jti: str | None = None
    sid: str | None = None
    legal_entity_id: str | None = None


class JWK(Document):
    """A public key (RFC 7517 §4)."""

    kty: str
    kid: str
    alg: str = None
    use: str = None


class JWKS(Document):
    """The keys a verifier must accept now."""

    keys: list[JWK]


class ServerMetadata(BaseModel):
    """Authorization server metadata (RFC 8414 §2), OpenID Connect Discovery 1.0 §3's in the
    same document; api/public.py builds it through this model."""

    model_config = ConfigDict(extra="forbid")

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    end_session_endpoint: str
    jwks_uri: str
    introspection_endpoint: str
    revocation_endpoint: str
    registration_endpoint: Annotated[
        str, Field(description="RFC 7591; needs an initial access token.")
    ]
    grant_types_supported: list[GrantType]
    response_types_supported: list[Literal["code"]]
    response_modes_supported: list[Literal["query"]]
    code_challenge_methods_supported: list[Literal["S256"]]
    authorization_response_iss_parameter_supported: bool
    subject_types_supported: list[Literal["public"]]
    id_token_signing_alg_values_supported: list[str]
    prompt_values_supported: list[str]
    claims_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    introspection_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    scopes_supported: list[str]
    access_token_signing_alg_values_supported: list[str]
    service_documentation: Annotated[str, Field(description="This document.")]
    legal_entity_switching_supported: Annotated[
        bool, Field(description="A refresh with `legal_entity_id` switches company.")
    ]
    refresh_token_rotation_grace_seconds: Annotated[
        int, Field(description="How long a rotated refresh token replays its answer.")
    ]
    # OpenID Connect Back-Channel Logout 1.0 §2.1.
    backchannel_logout_supported: bool
    backchannel_logout_session_supported: bool


class UserInfo(Document):
    """The claims the session's scopes release (OpenID Connect Core §5.3)."""

    sub: str
    legal_entity_id: str | None
    email: str = None
    email_verified: bool = None
    name: str = None


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Each dependency's state: `ok`, or what is wrong with it."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


NO_STORE = {"Cache-Control": "`no-store`: token responses are never cached."}
CLIENT_AUTH = ({"clientBasic": []}, {})


def _oauth_error(description: str, *extra: str) -> Reply:
    headers = dict(NO_STORE)
    if "challenge" in extra:
        headers["WWW-Authenticate"] = "Present when the client used HTTP Basic."
    if "retry" in extra:
        headers["Retry-After"] = "Seconds to wait."
    return Reply(description, OAuthError, headers=headers)


_BAD = _oauth_error("Invalid request.")
_UNAUTHENTICATED = _oauth_error("Client authentication failed.", "challenge")


def _oauth(name: str, summary: str, description: str, body: type[Form], replies: dict) -> Endpoint:
    return Endpoint(
        "POST",
        f"/oauth/{name}",
        name,
        "OAuth",
        summary,
        replies,
        description,
        CLIENT_AUTH,
        body=body,
        media="application/x-www-form-urlencoded",
    )


def _public(path: str, operation_id: str, tag: str, summary: str, replies: dict) -> Endpoint:
    return Endpoint("GET", path, operation_id, tag, summary, replies)


_METADATA = {
    200: Reply("Metadata.", ServerMetadata),
    503: Reply("No signing key.", Error),
}

PUBLIC = [
    _oauth(
        "token",
        "Token endpoint (RFC 6749)",
        "Grants `authorization_code` (PKCE S256; with `openid`, an `id_token`; a third-party "
        "client's refresh token needs `offline_access`), `password` "
        "(first-party clients; RFC 9700 §2.4 says it MUST NOT be used: prefer the code flow), "
        "`refresh_token` (rotation, legal-entity switching; with `openid`, an `id_token`) and "
        "`client_credentials`. Client "
        "authentication: client_secret_basic, client_secret_post, or none for public clients. "
        "Errors are RFC 6749 §5.2 JSON.",
        TokenForm,
        {
            200: Reply("Tokens.", TokenResponse, headers=NO_STORE),
            400: _oauth_error("Invalid request, grant, scope or grant type."),
            401: _UNAUTHENTICATED,
            429: _oauth_error("Too many failed logins: wait.", "retry"),
            503: _oauth_error("A backend is unavailable.", "retry"),
        },
    ),
    _oauth(
        "introspect",
        "Token introspection (RFC 7662)",
        "For clients holding `token.introspect`; access and refresh tokens. Anything not "
        'active is exactly `{"active": false}`.',
        TokenHintForm,
        {
            200: Reply("The token's state.", Introspection, headers=NO_STORE),
            400: _BAD,
            401: _UNAUTHENTICATED,
            403: _oauth_error("The client may not introspect."),
            503: _oauth_error("Revocation state unavailable.", "retry"),
        },
    ),
    _oauth(
        "revoke",
        "Token revocation (RFC 7009)",
        "A refresh token revokes its whole session; an access token is deny-listed by `jti`. "
        "Unknown tokens: 200.",
        TokenHintForm,
        {
            200: Reply("Revoked (or unknown)."),
            400: _BAD,
            401: _UNAUTHENTICATED,
            503: _oauth_error("The revocation could not be stored.", "retry"),
        },
    ),
    _public(
        "/jwks.json",
        "jwks",
        "Discovery",
        "Published signing keys (RFC 7517)",
        {200: Reply("The keys a verifier must accept now.", JWKS, "application/jwk-set+json")},
    ),
    _public(
        "/.well-known/oauth-authorization-server",
        "discovery",
        "Discovery",
        "Authorization server metadata (RFC 8414)",
        _METADATA,
    ),
    _public(
        "/.well-known/openid-configuration",
        "discovery_openid",
        "Discovery",
        "The same metadata at the OpenID location",
        _METADATA,
    ),
    _public("/healthz", "healthz", "Operations", "Liveness", {200: Reply("Up.", Health)}),
    _public(
        "/readyz",
        "readyz",
        "Operations",
        "Readiness: the database and the store answer, a signing key signs",
        {200: Reply("Ready.", Readiness), 503: Reply("Not ready.", Readiness)},
    ),
    _public(
        "/openapi.json",
        "openapi",
        "Operations",
        "This document",
        {200: Reply("OpenAPI 3.1.", {"type": "object"})},
    ),
]


# -- the hosted pages (api/frontdoor.py) -----------------------------------------------------


class AuthorizationRequest(Form):
    """An authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, OpenID Connect Core §3.1.2.1)."""

    response_type: str
    client_id: str
    redirect_uri: str
    scope: str = None
    state: str = None
    nonce: str = None
    code_challenge: str = None
    code_challenge_method: str = None
    prompt: str = None
    max_age: str = None
    login_hint: str = None
    legal_entity_id: str = None


class AuthorizationQuery(AuthorizationRequest):
    """The authorization request in the query: the page says what is missing."""

    response_type: str = None
    client_id: str = None
    redirect_uri: str = None


class PageStep(Form):
    """What every step of the hosted sign-in sends back: the CSRF token and the request."""

    csrf_token: str
    authorization_request: str


class LoginForm(PageStep):
    """The sign-in form."""

    email: str = None
    password: str = None


class SelectForm(PageStep):
    """The company picker."""

    legal_entity_id: str = None


class ConsentForm(PageStep):
    """The consent page."""

    decision: str = None


class LogoutQuery(Form):
    """An RP-initiated logout request (OpenID Connect RP-Initiated Logout 1.0 §2)."""

    id_token_hint: str = None
    post_logout_redirect_uri: str = None
    state: str = None
    client_id: str = None


class LogoutForm(LogoutQuery):
    """The logout confirmation."""

    csrf_token: str


class ActivationQuery(Form):
    """The link of an invitation's email."""

    token: str


class ActivationForm(Form):
    """The set-password form of an invited customer."""

    csrf_token: str
    token: str
    password: str
    confirm_password: str


class JoinQuery(Form):
    """The link of an existing customer's invitation."""

    token: str = None


class JoinForm(Form):
    """Join or Decline, signed in as the invitee."""

    csrf_token: str
    token: str = None
    decision: str = None


class JoinSignInForm(Form):
    """The join page's sign-in."""

    csrf_token: str
    token: str = None
    email: str = None
    password: str = None


_HTML = {"type": "string"}
PAGE_HEADERS = {
    "Cache-Control": "`no-store`.",
    "X-Frame-Options": "`DENY`: never framed.",
    "Referrer-Policy": "`no-referrer`.",
}
SIGN_IN_REPLIES = {
    200: Reply("A page.", _HTML, "text/html", PAGE_HEADERS),
    302: Reply("To the client's registered redirect URI."),
    303: Reply("To the client's registered redirect URI."),
    400: Reply("An error page (never a redirect).", _HTML, "text/html", PAGE_HEADERS),
    401: Reply("Sign-in refused: the page again.", _HTML, "text/html", PAGE_HEADERS),
    429: Reply("Too many failed sign-ins.", _HTML, "text/html", PAGE_HEADERS),
}
STEP = "A step of the hosted sign-in; the form carries a CSRF token and the request."


def page(
    method: str,
    path: str,
    operation_id: str,
    summary: str,
    description: str,
    model: type[Form] | None = None,
    replies: dict[int, Reply] = SIGN_IN_REPLIES,
) -> Endpoint:
    """A hosted HTML page: its query (GET) or its form (POST) is `model`."""
    form = method == "POST" and model is not None
    return Endpoint(
        method,
        path,
        operation_id,
        "Front door",
        summary,
        replies,
        description,
        query=params_of(model) if model is not None and not form else (),
        body=model if form else None,
        media="application/x-www-form-urlencoded",
    )


ACTIVATION_REPLIES = {
    200: Reply("The form, or the customer is activated.", _HTML, "text/html", PAGE_HEADERS),
    400: Reply("The form is not valid: the page again.", _HTML, "text/html", PAGE_HEADERS),
    404: Reply(
        "The link is unknown, used, expired or replaced: a page that says so.",
        _HTML,
        "text/html",
        PAGE_HEADERS,
    ),
}
JOIN_REPLIES = {
    200: Reply(
        "Signed in as the invitee: Join / Decline, or what was decided; else the sign-in form.",
        _HTML,
        "text/html",
        PAGE_HEADERS,
    ),
    400: Reply("The form is not valid: an error page.", _HTML, "text/html", PAGE_HEADERS),
    404: Reply(
        "The link is unknown, used, declined, withdrawn or expired, or for another account: "
        "a page that says only that.",
        _HTML,
        "text/html",
        PAGE_HEADERS,
    ),
}
JOIN_SIGN_IN_REPLIES = {
    303: Reply("Signed in: back to the join page of the same link."),
    400: Reply("An error page, or the form again.", _HTML, "text/html", PAGE_HEADERS),
    401: Reply("Sign-in refused: the form again.", _HTML, "text/html", PAGE_HEADERS),
    429: Reply("Too many failed sign-ins.", _HTML, "text/html", PAGE_HEADERS),
}
_USERINFO = {
    200: Reply("Claims.", UserInfo),
    401: Reply("No or no live access token.", OAuthError, headers={"WWW-Authenticate": "Bearer."}),
    403: Reply("No openid scope.", OAuthError),
    503: Reply("Unavailable.", OAuthError),
}
_DEMO = {
    200: Reply("A page.", _HTML, "text/html"),
    404: Reply(
        "No demo-web client: `token-service demo` registers it when the issuer is https or "
        "http on localhost.",
        _HTML,
        "text/plain",
    ),
}

FRONT_DOOR = [
    page(
        "GET",
        "/oauth/authorize",
        "authorize",
        "Authorization endpoint (RFC 6749 §4.1, PKCE S256, OpenID Connect)",
        "Shows the sign-in page, the company picker or the consent page as needed, then "
        "redirects with `code`, `state` and `iss` (RFC 9207).",
        AuthorizationQuery,
    ),
    page(
        "POST",
        "/oauth/authorize",
        "authorize_post",
        "Authorization endpoint, form-encoded",
        "As GET (OpenID Connect Core §3.1.2.1).",
        AuthorizationRequest,
    ),
    page("POST", "/oauth/authorize/login", "authorize_login", "Sign-in form", STEP, LoginForm),
    page("POST", "/oauth/authorize/select", "authorize_select", "Company picker", STEP, SelectForm),
    page(
        "POST", "/oauth/authorize/consent", "authorize_consent", "Consent form", STEP, ConsentForm
    ),
    page(
        "GET",
        "/oauth/logout",
        "logout",
        "RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0)",
        "Ends the browser session and revokes the refresh-token families born from it; "
        "redirects to a registered `post_logout_redirect_uri` with `state`.",
        LogoutQuery,
    ),
    page(
        "POST",
        "/oauth/logout",
        "logout_post",
        "Logout confirmation form",
        "The confirmation asked when no valid `id_token_hint` came.",
        LogoutForm,
    ),
    page(
        "GET",
        "/activate",
        "activate",
        "Set a password: an invited customer's activation page",
        "The link of an invitation's email: a form to choose a password.",
        ActivationQuery,
        ACTIVATION_REPLIES,
    ),
    page(
        "POST",
        "/activate",
        "activate_post",
        "Set a password: the activation form",
        "Activates the invited customer with the password (twice, to catch a typo).",
        ActivationForm,
        ACTIVATION_REPLIES,
    ),
    page(
        "GET",
        "/invitations/join",
        "join",
        "Join a company: an existing customer's invitation page",
        "The link of an existing customer's invitation: signed in as the invitee, Join or "
        "Decline; not signed in, a sign-in form first.",
        JoinQuery,
        JOIN_REPLIES,
    ),
    page(
        "POST",
        "/invitations/join",
        "join_post",
        "Join a company: Join or Decline",
        "Join assigns the signed-in invitee to the company; Decline assigns nothing.",
        JoinForm,
        JOIN_REPLIES,
    ),
    page(
        "POST",
        "/invitations/join/sign-in",
        "join_sign_in",
        "Join a company: the sign-in form",
        "The password grant's check, then back to the join page of the same link.",
        JoinSignInForm,
        JOIN_SIGN_IN_REPLIES,
    ),
    *(
        Endpoint(
            method,
            "/oauth/userinfo",
            operation_id,
            "Front door",
            "UserInfo (OpenID Connect Core §5.3)",
            _USERINFO,
            security=({"bearerToken": []},),
        )
        for method, operation_id in (("GET", "userinfo"), ("POST", "userinfo_post"))
    ),
    Endpoint(
        "GET",
        "/demo",
        "demo",
        "Front door",
        "A demo browser client of the code flow (the `demo-web` client)",
        _DEMO,
    ),
]
