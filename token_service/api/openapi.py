"""GET /openapi.json: the OpenAPI 3.1 description of every route of the service.

The public routes (token, introspection, revocation, keys, discovery, health, front door) are
described here by hand. The admin and self-service routes are generated from their
`@operation` declarations, and their component schemas from the pydantic models that validate
the requests and describe the responses, so the document cannot drift from the code. A test
checks that every URL rule of the app is in the document, and fuzzes the app against it.
"""

from __future__ import annotations

import copy
from importlib import metadata

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .admin import OPERATIONS
from .admin.auth import MANAGE_SCOPE, READ_SCOPE
from .admin.errors import Error
from .admin.schema import ComponentSchema
from .self_service import OPERATIONS as SELF_SERVICE_OPERATIONS

bp = Blueprint("openapi", __name__)

OAS_VERSION = "3.1.0"
REF = "#/components/schemas/"
ERROR_RESPONSES = {
    400: "The request cannot be read: not JSON, or a malformed query parameter.",
    401: "No access token, or an invalid, expired or revoked one.",
    403: "The access token lacks the scope, or belongs to a customer.",
    404: "No such resource (or a referenced one in the body is missing).",
    409: "The change conflicts with the current data.",
    429: "Too many requests of this kind: wait `Retry-After` seconds.",
    412: "`If-Match` names an older version: fetch the resource again.",
    422: "The body is well-formed but invalid; `fields` says what is wrong where.",
    503: "The database or the revocation store is unavailable; retry.",
}


def _ref(name: str) -> dict:
    return {"$ref": REF + name}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _header(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "schema": schema or {"type": "string"}}


NO_STORE = _header("`no-store`: token responses are never cached.")


def _oauth_error(description: str, *, challenge: bool = False, retry: bool = False) -> dict:
    headers = {"Cache-Control": NO_STORE}
    if challenge:
        headers["WWW-Authenticate"] = _header("Present when the client used HTTP Basic.")
    if retry:
        headers["Retry-After"] = _header("Seconds to wait.", {"type": "integer"})
    return {"description": description, "headers": headers, "content": _json(_ref("OAuthError"))}


def _form(properties: dict, required: list[str]) -> dict:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


_STR = {"type": "string"}
CLIENT_AUTH = [{"clientBasic": []}, {}]
TOKEN_PARAMS = {
    "grant_type": {
        "type": "string",
        "enum": ["authorization_code", "password", "refresh_token", "client_credentials"],
    },
    "code": {**_STR, "description": "authorization_code grant: the code (single use)."},
    "redirect_uri": {**_STR, "description": "authorization_code grant: as in the request."},
    "code_verifier": {**_STR, "description": "authorization_code grant: PKCE (RFC 7636)."},
    "client_id": {**_STR, "description": "client_secret_post or public clients."},
    "client_secret": {**_STR, "description": "client_secret_post."},
    "username": {**_STR, "description": "password grant: the customer's email."},
    "password": {**_STR, "description": "password grant."},
    "refresh_token": {**_STR, "description": "refresh_token grant."},
    "scope": {**_STR, "description": "Narrow the ceiling (space-separated)."},
    "legal_entity_id": {
        **_STR,
        "description": "Act for this legal entity (password and refresh grants): a refresh "
        "with it switches company without a new login.",
    },
}
REVOCATION_PARAMS = {
    "token": _STR,
    "token_type_hint": {"type": "string", "enum": ["access_token", "refresh_token"]},
}


def _public_paths() -> dict:
    return {
        "/oauth/token": {
            "post": {
                "tags": ["OAuth"],
                "operationId": "token",
                "summary": "Token endpoint (RFC 6749)",
                "description": "Grants `authorization_code` (PKCE S256; with `openid`, an "
                "`id_token`), `password` (first-party clients; RFC 9700 §2.4 says it MUST NOT "
                "be used: prefer the code flow), `refresh_token` "
                "(rotation, legal-entity switching) and `client_credentials`. Client "
                "authentication: client_secret_basic, client_secret_post, or none for public "
                "clients. Errors are RFC 6749 §5.2 JSON.",
                "security": CLIENT_AUTH,
                "requestBody": _form(TOKEN_PARAMS, ["grant_type"]),
                "responses": {
                    "200": {
                        "description": "Tokens.",
                        "headers": {"Cache-Control": NO_STORE},
                        "content": _json(_ref("TokenResponse")),
                    },
                    "400": _oauth_error("Invalid request, grant, scope or grant type."),
                    "401": _oauth_error("Client authentication failed.", challenge=True),
                    "429": _oauth_error("Too many failed logins: wait.", retry=True),
                    "503": _oauth_error("A backend is unavailable.", retry=True),
                },
            }
        },
        "/oauth/introspect": {
            "post": {
                "tags": ["OAuth"],
                "operationId": "introspect",
                "summary": "Token introspection (RFC 7662)",
                "description": "For clients holding `token.introspect`; access and refresh "
                'tokens. Anything not active is exactly `{"active": false}`.',
                "security": CLIENT_AUTH,
                "requestBody": _form(REVOCATION_PARAMS, ["token"]),
                "responses": {
                    "200": {
                        "description": "The token's state.",
                        "headers": {"Cache-Control": NO_STORE},
                        "content": _json(_ref("Introspection")),
                    },
                    "400": _oauth_error("Invalid request."),
                    "401": _oauth_error("Client authentication failed.", challenge=True),
                    "403": _oauth_error("The client may not introspect."),
                    "503": _oauth_error("Revocation state unavailable.", retry=True),
                },
            }
        },
        "/oauth/revoke": {
            "post": {
                "tags": ["OAuth"],
                "operationId": "revoke",
                "summary": "Token revocation (RFC 7009)",
                "description": "A refresh token revokes its whole session; an access token is "
                "deny-listed by `jti`. Unknown tokens: 200.",
                "security": CLIENT_AUTH,
                "requestBody": _form(REVOCATION_PARAMS, ["token"]),
                "responses": {
                    "200": {"description": "Revoked (or unknown)."},
                    "400": _oauth_error("Invalid request."),
                    "401": _oauth_error("Client authentication failed.", challenge=True),
                    "503": _oauth_error("The revocation could not be stored.", retry=True),
                },
            }
        },
        **_front_door_paths(),
        "/jwks.json": {
            "get": {
                "tags": ["Discovery"],
                "operationId": "jwks",
                "summary": "Published signing keys (RFC 7517)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The keys a verifier must accept now.",
                        "content": {"application/jwk-set+json": {"schema": _ref("JWKS")}},
                    }
                },
            }
        },
        "/.well-known/oauth-authorization-server": {
            "get": _discovery("discovery", "Authorization server metadata (RFC 8414)")
        },
        "/.well-known/openid-configuration": {
            "get": _discovery("discovery_openid", "The same metadata at the OpenID location")
        },
        "/healthz": {
            "get": {
                "tags": ["Operations"],
                "operationId": "healthz",
                "summary": "Liveness",
                "security": [],
                "responses": {
                    "200": {"description": "The process is up.", "content": _json(_ref("Health"))}
                },
            }
        },
        "/readyz": {
            "get": {
                "tags": ["Operations"],
                "operationId": "readyz",
                "summary": "Readiness: the database and the store answer",
                "security": [],
                "responses": {
                    "200": {"description": "Ready.", "content": _json(_ref("Readiness"))},
                    "503": {"description": "Not ready.", "content": _json(_ref("Readiness"))},
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["Operations"],
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}
                },
            }
        },
    }


_HTML = {"text/html": {"schema": {"type": "string"}}}
_PAGE_HEADERS = {
    "Cache-Control": _header("`no-store`."),
    "X-Frame-Options": _header("`DENY`: never framed."),
    "Referrer-Policy": _header("`no-referrer`."),
}
AUTHORIZE_PARAMS = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
    "legal_entity_id",
]


def _hosted(operation_id: str, summary: str, description: str, **extra) -> dict:
    """A hosted page: HTML, or a redirect to an exact registered URI."""
    return {
        "tags": ["Front door"],
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "security": [],
        **extra,
        "responses": {
            "200": {"description": "A page.", "headers": _PAGE_HEADERS, "content": _HTML},
            "302": {"description": "To the client's registered redirect URI."},
            "303": {"description": "To the client's registered redirect URI."},
            "400": {"description": "An error page (never a redirect).", "content": _HTML},
            "401": {"description": "Sign-in refused: the page again.", "content": _HTML},
            "429": {"description": "Too many failed sign-ins.", "content": _HTML},
        },
    }


STEP = ("csrf_token", "authorization_request")  # what every step's form sends


def _page_form(fields: list[str], required: tuple[str, ...] = ()) -> dict:
    return _form({name: _STR for name in fields}, list(required))


def _front_door_paths() -> dict:
    query = [{"name": n, "in": "query", "schema": _STR} for n in AUTHORIZE_PARAMS]
    logout_query = [
        {"name": n, "in": "query", "schema": _STR}
        for n in ("id_token_hint", "post_logout_redirect_uri", "state", "client_id")
    ]
    step = "A step of the hosted sign-in; the form carries a CSRF token and the request."
    userinfo = {
        "tags": ["Front door"],
        "operationId": "userinfo",
        "summary": "UserInfo (OpenID Connect Core §5.3)",
        "security": [{"bearerToken": []}],
        "responses": {
            "200": {"description": "Claims.", "content": _json({"type": "object"})},
            "401": {
                "description": "No or no live access token.",
                "headers": {"WWW-Authenticate": _header("Bearer.")},
                "content": _json({"type": "object"}),
            },
            "403": {"description": "No openid scope.", "content": _json({"type": "object"})},
            "503": {"description": "Unavailable.", "content": _json({"type": "object"})},
        },
    }
    return {
        "/oauth/authorize": {
            "get": _hosted(
                "authorize",
                "Authorization endpoint (RFC 6749 §4.1, PKCE S256, OpenID Connect)",
                "Shows the sign-in page, the company picker or the consent page as needed, "
                "then redirects with `code`, `state` and `iss` (RFC 9207).",
                parameters=query,
            ),
            "post": _hosted(
                "authorize_post",
                "Authorization endpoint, form-encoded",
                "As GET (OpenID Connect Core §3.1.2.1).",
                requestBody=_page_form(
                    AUTHORIZE_PARAMS, ("response_type", "client_id", "redirect_uri")
                ),
            ),
        },
        "/oauth/authorize/login": {
            "post": _hosted(
                "authorize_login",
                "Sign-in form",
                step,
                requestBody=_page_form(
                    ["csrf_token", "authorization_request", "email", "password"], STEP
                ),
            )
        },
        "/oauth/authorize/select": {
            "post": _hosted(
                "authorize_select",
                "Company picker form",
                step,
                requestBody=_page_form(
                    ["csrf_token", "authorization_request", "legal_entity_id"], STEP
                ),
            )
        },
        "/oauth/authorize/consent": {
            "post": _hosted(
                "authorize_consent",
                "Consent form",
                step,
                requestBody=_page_form(["csrf_token", "authorization_request", "decision"], STEP),
            )
        },
        "/oauth/userinfo": {"get": userinfo, "post": {**userinfo, "operationId": "userinfo_post"}},
        "/oauth/logout": {
            "get": _hosted(
                "logout",
                "RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0)",
                "Ends the browser session and revokes the refresh-token families born from "
                "it; redirects to a registered `post_logout_redirect_uri` with `state`.",
                parameters=logout_query,
            ),
            "post": _hosted(
                "logout_post",
                "Logout confirmation form",
                "The confirmation asked when no valid `id_token_hint` came.",
                requestBody=_page_form(
                    ["csrf_token", "id_token_hint", "post_logout_redirect_uri", "state"],
                    ("csrf_token",),
                ),
            ),
        },
        "/demo": {
            "get": {
                "tags": ["Front door"],
                "operationId": "demo",
                "summary": "A demo browser client of the code flow (the `demo-web` client)",
                "security": [],
                "responses": {
                    "200": {"description": "A page.", "content": _HTML},
                    "404": {
                        "description": "No demo-web client: `token-service demo` registers "
                        "it when the issuer is https or http on localhost.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                },
            }
        },
    }


def _discovery(operation_id: str, summary: str) -> dict:
    return {
        "tags": ["Discovery"],
        "operationId": operation_id,
        "summary": summary,
        "security": [],
        "responses": {
            "200": {"description": "Metadata.", "content": _json(_ref("ServerMetadata"))},
            "503": {"description": "No signing key.", "content": _json(_ref("Error"))},
        },
    }


def _public_schemas() -> dict:
    nullable_str = {"type": ["string", "null"]}
    return {
        "OAuthError": {
            "type": "object",
            "description": "RFC 6749 §5.2.",
            "properties": {
                "error": _STR,
                "error_description": _STR,
                "error_uri": _STR,
            },
            "required": ["error"],
        },
        "TokenResponse": {
            "type": "object",
            "properties": {
                "access_token": {**_STR, "description": "An RFC 9068 JWT."},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "scope": _STR,
                "refresh_token": _STR,
                "refresh_token_expires_in": {"type": "integer"},
                "id_token": {**_STR, "description": "OpenID Connect ID token (code flow)."},
                "legal_entity_id": nullable_str,
                "legal_entities": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"id": _STR, "name": _STR},
                        "required": ["id", "name"],
                    },
                },
            },
            "required": ["access_token", "token_type", "expires_in", "scope"],
        },
        "Introspection": {
            "type": "object",
            "properties": {
                "active": {"type": "boolean"},
                "token_type": _STR,
                "scope": _STR,
                "client_id": _STR,
                "sub": _STR,
                "exp": {"type": "integer"},
                "iat": {"type": "integer"},
                "iss": _STR,
                "aud": nullable_str,
                "jti": nullable_str,
                "sid": nullable_str,
                "legal_entity_id": nullable_str,
            },
            "required": ["active"],
        },
        "JWKS": {
            "type": "object",
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"kty": _STR, "kid": _STR, "alg": _STR, "use": _STR},
                        "required": ["kty", "kid"],
                    },
                }
            },
            "required": ["keys"],
        },
        "ServerMetadata": {
            "type": "object",
            "properties": {
                "issuer": _STR,
                "token_endpoint": _STR,
                "jwks_uri": _STR,
                "introspection_endpoint": _STR,
                "revocation_endpoint": _STR,
                "grant_types_supported": {"type": "array", "items": _STR},
                "scopes_supported": {"type": "array", "items": _STR},
            },
            "required": ["issuer", "token_endpoint", "jwks_uri"],
        },
        "Health": {
            "type": "object",
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
            "required": ["status"],
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "checks": {"type": "object", "additionalProperties": _STR},
            },
            "required": ["status", "checks"],
        },
    }


def _error(status: int, *, challenge: bool = False) -> dict:
    response = {"description": ERROR_RESPONSES[status], "content": _json(_ref("Error"))}
    if challenge:
        response["headers"] = {"WWW-Authenticate": _header("RFC 6750 §3 challenge.")}
    if status in (429, 503):
        response["headers"] = {"Retry-After": _header("Seconds.", {"type": "integer"})}
    return response


def _parameters(op) -> list[dict]:
    """Path and query parameters of an admin or self-service operation."""
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 128},
        }
        for name in op.path_params
    ]
    parameters += [
        {
            "name": param.name,
            "in": "query",
            "required": param.required,
            "schema": param.schema,
            **({"description": param.description} if param.description else {}),
        }
        for param in op.query
    ]
    return parameters


def _operation(op, models: set, responses: dict, errors: set, operation_id: str, security):
    """The rest of an operation: its success `responses` (status to model, None for no body)
    get their content, `errors` their Error responses, and every model is added to `models`."""
    result_responses: dict[str, dict] = {}
    for status, (model, headers) in sorted(responses.items()):
        response: dict = {"description": "Success."}
        if model is not None:
            models.add(model)
            response["content"] = _json(_ref(model.__name__))
        if headers:
            response["headers"] = headers
        result_responses[str(status)] = response
    if op.body is not None:
        errors |= {400, 422}
    if op.query:
        errors.add(400)
    for status in sorted(errors):
        result_responses[str(status)] = _error(status, challenge=status in (401, 403))
    result = {
        "tags": [op.tag],
        "operationId": operation_id,
        "summary": op.summary,
        "security": security,
        "parameters": _parameters(op),
        "responses": result_responses,
    }
    if op.description:
        result["description"] = op.description
    if op.body is not None:
        models.add(op.body)
        result["requestBody"] = {"required": True, "content": _json(_ref(op.body.__name__))}
    return result


def _admin_operation(op, models: set) -> dict:
    responses = {}
    for status, model in op.responses.items():
        headers = {}
        if op.etag and status in (200, 201):
            headers["ETag"] = _header("The version, for `If-Match`.")
        if status == 201:
            headers["Location"] = _header("URL of the new resource.")
        responses[status] = (model, headers)
    errors = {401, 403, 503}
    if op.body is not None or op.path_params:
        errors.add(404)
    if op.write or op.conflicts:
        errors.add(409)
    if op.write and op.etag:
        errors.add(412)
    scope = MANAGE_SCOPE if op.write else READ_SCOPE
    result = _operation(op, models, responses, errors, op.endpoint, [{"adminToken": [scope]}])
    if op.etag and op.write:
        result["parameters"].append(
            {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": "The `ETag` last read: 412 if the resource changed since.",
                "schema": {"type": "string", "pattern": '^(\\*|"[0-9]{1,9}")$'},
            }
        )
    return result


def _self_service_operation(op, models: set) -> dict:
    errors = set(op.errors) | {503}
    if op.scope is not None:
        errors |= {401, 403}
    if op.path_params:
        errors.add(404)
    return _operation(
        op,
        models,
        {status: (model, None) for status, model in op.responses.items()},
        errors,
        f"self_service_{op.endpoint}",
        [{"customerToken": [op.scope]}] if op.scope else [],
    )


def _component_schemas(models: set[type[BaseModel]]) -> dict:
    """JSON Schemas of `models` and of the models they refer to, by class name."""
    ordered = sorted(models, key=lambda model: model.__name__)
    _, document = models_json_schema(
        [(model, "validation") for model in ordered],
        ref_template=REF + "{model}",
        schema_generator=ComponentSchema,
    )
    schemas = document.get("$defs", {})
    # pydantic qualifies a name that two models share: one name, one model.
    clashes = [name for name in schemas if "__" in name]
    assert not clashes, f"two models are named like {clashes}"
    return schemas


# -- the Emporix-compatible layer (api/emporix.py) --------------------------------------------

_TIME = {"type": "string", "format": "date-time"}


def _object(description: str, /, **properties) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_INT = {"type": "integer"}
_TENANT = {"type": "string", "pattern": "^[a-z][a-z0-9]+$", "minLength": 3, "maxLength": 16}
EMPORIX_TAG = "Emporix-compatible"
_EMPORIX_FAULT = {
    "type": "object",
    "description": "What Emporix's gateway answers a 401 with.",
    "properties": {
        "faultstring": _STR,
        "detail": {"type": "object", "properties": {"errorcode": _STR}, "required": ["errorcode"]},
    },
    "required": ["faultstring", "detail"],
}


def _strict(description: str, required: list[str], /, **properties) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


_EMPORIX_CUSTOMER_TOKEN = {
    "access_token": {**_STR, "description": "An RFC 9068 JWT access token."},
    "expires_in": _INT,
    "refresh_token": _STR,
    "refresh_token_expires_in": _INT,
    "token_type": {"const": "Bearer"},
    "session_id": _STR,
}

EMPORIX_SCHEMAS = {
    "EmporixAnonymousToken": _object(
        "An anonymous token: a storefront visit's session, no customer.",
        token_type={"const": "Bearer"},
        access_token={**_STR, "description": "A JWT of type anon+jwt, for this layer only."},
        expires_in=_INT,
        refresh_token=_STR,
        refresh_token_expires_in=_INT,
        sessionId=_STR,
        scope={**_STR, "description": "`tenant=<name>`."},
    ),
    "EmporixRefreshCustomerToken": _object(
        "A customer's tokens after a refresh.", **_EMPORIX_CUSTOMER_TOKEN
    ),
    "EmporixCustomerToken": _object(
        "A customer's tokens after a login.",
        **_EMPORIX_CUSTOMER_TOKEN,
        saas_token={**_STR, "description": "The same access token (no separate SaaS token)."},
        initialPassword={
            "type": "string",
            "enum": ["false"],
            "description": "Whether an employee set the password: always `false` here.",
        },
    ),
    "EmporixValidateTokenResponse": _strict(
        "A live customer access token's details.",
        ["token_type", "expires_in", "scope", "sessionId", "email"],
        token_type={"const": "Bearer"},
        expires_in=_INT,
        scope={**_STR, "description": "The token's scopes and `tenant=<name>`."},
        sessionId=_STR,
        email=_STR,
        legalEntityId={**_STR, "description": "Absent if the token acts for no entity."},
    ),
    "EmporixCustomer": _strict(
        "The customer's profile fields this service holds (a visitor's: anonymous).",
        ["id", "customerNumber", "accounts"],
        id=_STR,
        customerNumber=_STR,
        firstName=_STR,
        lastName=_STR,
        contactEmail=_STR,
        accounts={
            "type": "array",
            "items": _strict("A login.", ["id"], id={**_STR, "description": "The email."}),
        },
        businessModel={"type": "string", "enum": ["B2B", "B2C"]},
        b2b=_strict(
            "The customer's legal entities.",
            ["legalEntities"],
            legalEntities={
                "type": "array",
                "items": _strict("A legal entity.", ["id", "name"], id=_STR, name=_STR),
            },
        ),
    ),
    "EmporixPasswordAuthentication": {
        "type": "object",
        "properties": {
            "email": {"type": "string", "minLength": 1, "maxLength": 320},
            "password": {"type": "string", "minLength": 1, "maxLength": 1024},
        },
        "required": ["email", "password"],
    },
    "EmporixError": {
        "type": "object",
        "description": "Emporix customer-management's error.",
        "properties": {
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "type": {"type": "string", "pattern": "^[a-z][a-z_]*[a-z]$"},
            "message": _STR,
            "fault": _EMPORIX_FAULT,
        },
        "required": ["status", "type", "message"],
    },
    "EmporixIamError": {
        "type": "object",
        "description": "Emporix IAM's error.",
        "properties": {
            "code": {"type": "integer", "minimum": 400, "maximum": 599},
            "status": _STR,
            "message": _STR,
            "details": {"type": "array", "items": _STR},
            "fault": _EMPORIX_FAULT,
        },
        "required": ["code", "status", "message", "details"],
    },
    "EmporixGroup": _strict(
        "One of the token's legal entity's groups.",
        ["id", "name", "code", "userType", "b2b", "metadata"],
        id=_STR,
        name={"type": "object", "additionalProperties": _STR},
        code={"type": "string", "enum": ["ADMIN", "BUYER", "REQUESTER", "CONTACT", "CUSTOM"]},
        userType={"const": "CUSTOMER"},
        b2b=_object("The group's legal entity.", legalEntityId=_STR),
        metadata=_object("Versioning.", version=_INT, createdAt=_TIME, modifiedAt=_TIME),
    ),
    "EmporixAssignment": _object(
        "A member of a group.",
        id={**_STR, "description": "`<groupId>:<userId>`."},
        groupId=_STR,
        userId=_STR,
        userType={"const": "CUSTOMER"},
    ),
    "EmporixAssignmentCreate": {
        "type": "object",
        "properties": {
            "userId": {"type": "string", "minLength": 1, "maxLength": 64},
            "userType": {"type": "string", "enum": ["CUSTOMER"]},
        },
        "required": ["userId"],
    },
    "EmporixAssignmentId": _object("The membership.", id=_STR),
}

_EMPORIX_ERRORS = {
    400: "A parameter or the body is missing or malformed.",
    401: "No token, or an invalid, expired or revoked one; for a login, wrong credentials.",
    403: "The token may not do this (scope, another company, escalation).",
    404: "Another tenant, or no such resource in the token's legal entity.",
    409: "The last admin of the legal entity stays.",
    429: "Too many failed logins: wait `Retry-After` seconds.",
    503: "The database or the store is unavailable: retry.",
}


def _emporix_error(status: int, iam: bool) -> dict:
    response = {
        "description": _EMPORIX_ERRORS[status],
        "content": _json(_ref("EmporixIamError" if iam else "EmporixError")),
    }
    if status in (429, 503):
        response["headers"] = {"Retry-After": _header("Seconds.", {"type": "integer"})}
    return response


def _emporix_operation(
    operation_id: str,
    summary: str,
    description: str,
    success: dict[str, dict],
    errors: tuple[int, ...],
    *,
    security: list | None = None,
    query: tuple[tuple[str, dict, bool], ...] = (),
    path: tuple[str, ...] = (),
    body: str | None = None,
    tenant_in_query: bool = False,
) -> dict:
    iam = operation_id.startswith("emporix_iam_")
    parameters = (
        []
        if tenant_in_query
        else [{"name": "tenant", "in": "path", "required": True, "schema": _TENANT}]
    )
    parameters += [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        }
        for name in path
    ]
    if tenant_in_query:
        parameters.append({"name": "tenant", "in": "query", "required": True, "schema": _TENANT})
    parameters += [
        {"name": name, "in": "query", "required": required, "schema": schema}
        for name, schema, required in query
    ]
    responses = dict(success)
    for status in sorted({*errors, 404, 503}):
        responses[str(status)] = _emporix_error(status, iam)
    result = {
        "tags": [EMPORIX_TAG],
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "security": security if security is not None else [{"bearerToken": []}],
        "parameters": parameters,
        "responses": responses,
    }
    if body is not None:
        result["requestBody"] = {"required": True, "content": _json(_ref(body))}
    return result


def _ok(schema: str, status: str = "200") -> dict[str, dict]:
    return {status: {"description": "Success.", "content": _json(_ref(schema))}}


_NO_CONTENT = {"204": {"description": "Done."}}
_CLIENT_ID = ("client_id", {"type": "string", "minLength": 1, "maxLength": 128}, True)
_ANONYMOUS = [{"emporixAnonymousToken": []}]


def _emporix_paths() -> dict:
    op = _emporix_operation
    return {
        "/customerlogin/auth/anonymous/login": {
            "get": op(
                "emporix_anonymous_login",
                "Emporix: an anonymous token",
                "A new anonymous session for the storefront client: a short-lived anonymous "
                "access token and its refresh token.",
                _ok("EmporixAnonymousToken"),
                (400, 401),
                security=[],
                query=(_CLIENT_ID,),
                tenant_in_query=True,
            )
        },
        "/customerlogin/auth/anonymous/refresh": {
            "get": op(
                "emporix_anonymous_refresh",
                "Emporix: refresh an anonymous token",
                "A new anonymous access token for the same session; the refresh token stays.",
                _ok("EmporixAnonymousToken"),
                (400, 401),
                security=[],
                query=(
                    _CLIENT_ID,
                    ("refresh_token", {"type": "string", "minLength": 1, "maxLength": 256}, True),
                ),
                tenant_in_query=True,
            )
        },
        "/customer/{tenant}/login": {
            "post": op(
                "emporix_login",
                "Emporix: log a customer in",
                "The password grant of `/oauth/token` for the storefront client "
                "(`TOKEN_SERVICE_EMPORIX_CLIENT_ID`): the same throttling and the same answer "
                "for every failure. Authorized with an anonymous token.",
                _ok("EmporixCustomerToken"),
                (400, 401, 429),
                security=_ANONYMOUS,
                body="EmporixPasswordAuthentication",
            )
        },
        "/customer/{tenant}/refreshauthtoken": {
            "get": op(
                "emporix_refresh_auth_token",
                "Emporix: refresh a customer token, optionally switching company",
                "The refresh grant of `/oauth/token` with `legal_entity_id`: rotation, grace "
                "replay, reuse detection, recomputed scopes; a refused switch leaves the "
                "presented refresh token valid. Authorized with an anonymous token or one of "
                "the customer's access tokens (expired ones too).",
                _ok("EmporixRefreshCustomerToken"),
                (400, 401),
                security=[*_ANONYMOUS, {"bearerToken": []}],
                query=(
                    ("refreshToken", {"type": "string", "minLength": 1, "maxLength": 256}, True),
                    ("legalEntityId", {"type": "string", "maxLength": 64}, False),
                ),
            )
        },
        "/customer/{tenant}/logout": {
            "get": op(
                "emporix_logout",
                "Emporix: log a customer out",
                "Revokes the session of `accessToken`; its access tokens are deny-listed at "
                "once. Authorized with an access token of the same customer.",
                _NO_CONTENT,
                (400, 401, 403),
                query=(
                    ("accessToken", {"type": "string", "minLength": 1, "maxLength": 4096}, True),
                ),
            )
        },
        "/customer/{tenant}/validateauthtoken": {
            "get": op(
                "emporix_validate_auth_token",
                "Emporix: validate a customer access token",
                "Introspection's live check of the bearer token (deny-list included).",
                _ok("EmporixValidateTokenResponse"),
                (401,),
            )
        },
        "/customer/{tenant}/me": {
            "get": op(
                "emporix_me",
                "Emporix: the customer's profile",
                "Id, email and legal entities: the profile fields this service holds.",
                _ok("EmporixCustomer"),
                (401,),
                security=[{"bearerToken": []}, *_ANONYMOUS],
            )
        },
        "/iam/{tenant}/groups": {
            "get": op(
                "emporix_iam_list_groups",
                "Emporix IAM: the groups of the token's legal entity",
                "company.groups: the entity's own groups (`customer.customer_read_own`).",
                {
                    "200": {
                        "description": "Success.",
                        "content": _json({"type": "array", "items": _ref("EmporixGroup")}),
                    }
                },
                (401, 403),
            )
        },
        "/iam/{tenant}/groups/{group_id}/users": {
            "get": op(
                "emporix_iam_list_group_users",
                "Emporix IAM: the members of a group",
                "Members of one of the entity's groups (`customer.customer_read_own`).",
                {
                    "200": {
                        "description": "Success.",
                        "content": _json({"type": "array", "items": _ref("EmporixAssignment")}),
                    }
                },
                (401, 403),
                path=("group_id",),
            ),
            "post": op(
                "emporix_iam_add_group_user",
                "Emporix IAM: add a member to a group",
                "company.add_to_group (`iam.assignment_create_own`): a member of the entity, "
                "into a group whose scopes the caller holds all of. Adding again answers the "
                "same.",
                _ok("EmporixAssignmentId", "201"),
                (400, 401, 403, 409),
                path=("group_id",),
                body="EmporixAssignmentCreate",
            ),
        },
        "/iam/{tenant}/groups/{group_id}/users/{customer_id}": {
            "delete": op(
                "emporix_iam_remove_group_user",
                "Emporix IAM: remove a member from a group",
                "company.remove_from_group (`iam.assignment_delete_own`): the member's access "
                "tokens for the entity stop at once; the last ADMIN stays (409). A group, "
                "user or membership outside the token's legal entity is a 403, as Emporix "
                "documents only 204, 401 and 403 here (404: another tenant).",
                _NO_CONTENT,
                (401, 403, 409),
                path=("group_id", "customer_id"),
            )
        },
    }


def build_document(issuer: str) -> dict:
    """The whole OpenAPI 3.1 document for a service at `issuer`."""
    paths = _public_paths()
    models: set[type[BaseModel]] = {Error}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _admin_operation(op, models)
    for op in SELF_SERVICE_OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _self_service_operation(op, models)
    schemas = {**_public_schemas(), **_component_schemas(models)}
    schemas.update(copy.deepcopy(EMPORIX_SCHEMAS))  # the document is the caller's to change
    paths.update(_emporix_paths())
    try:
        version = metadata.version("token-service")
    except metadata.PackageNotFoundError:
        version = "0.0.0"
    return {
        "openapi": OAS_VERSION,
        "info": {
            "title": "Token service",
            "version": version,
            "summary": "OAuth 2 token service for B2B commerce.",
            "description": "Access tokens per legal entity (RFC 9068 JWTs), rotating refresh "
            "tokens with company switching, introspection, revocation, and the admin API. "
            "Admin calls take a bearer token from `client_credentials` with `admin.read` "
            "(reads) or `admin.manage` (writes, and reads). Lists are cursor-paginated; "
            "updates honour `If-Match` with the `ETag` of the last read.",
        },
        "servers": [{"url": issuer}],
        "tags": [
            {"name": name}
            for name in dict.fromkeys(
                [
                    "OAuth",
                    "Front door",
                    "Discovery",
                    "Operations",
                    *(op.tag for op in OPERATIONS),
                    *(op.tag for op in SELF_SERVICE_OPERATIONS),
                    EMPORIX_TAG,
                ]
            )
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "clientBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "client_secret_basic (RFC 6749 §2.3.1).",
                },
                "customerToken": {
                    "type": "oauth2",
                    "description": "A customer's bearer access token acting for a legal "
                    "entity (`legal_entity_id`): self-service is confined to that entity.",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": f"{issuer}/oauth/authorize",
                            "tokenUrl": f"{issuer}/oauth/token",
                            "refreshUrl": f"{issuer}/oauth/token",
                            "scopes": {
                                "customer.customer_read_own": "Read the entity's members, "
                                "groups and audit events.",
                                "customer.customer_manage_own": "Invite into the entity.",
                                "iam.assignment_create_own": "Add members to the entity's groups.",
                                "iam.assignment_delete_own": "Remove members from groups or "
                                "from the entity.",
                            },
                        }
                    },
                },
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A customer's access token (RFC 6750).",
                },
                "emporixAnonymousToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An anonymous token from "
                    "`/customerlogin/auth/anonymous/login` (Emporix-compatible layer only).",
                },
                "adminToken": {
                    "type": "oauth2",
                    "description": "A bearer access token from client_credentials.",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": f"{issuer}/oauth/token",
                            "scopes": {
                                READ_SCOPE: "Read the directory, keys and audit events.",
                                MANAGE_SCOPE: "Change them (includes reading).",
                            },
                        }
                    },
                },
            },
        },
    }


@bp.get("/openapi.json")
def openapi_document():
    document = current_app.extensions.get("openapi_document")
    if document is None:
        document = build_document(current_app.config["SETTINGS"].issuer)
        current_app.extensions["openapi_document"] = document
    response = jsonify(document)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
