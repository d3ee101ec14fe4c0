"""GET /openapi.json: the OpenAPI 3.1 description of every route of the service, assembled.

Nothing here describes a route: each surface declares its own, and this module renders them
all one way. The admin and self-service operations come from their `@operation` tables, the
Emporix-compatible ones from `emporix.ENDPOINTS`, the OAuth, discovery and hosted-page ones from
`schemas`; every schema is the JSON Schema of the pydantic model that validates the request or
builds the answer. A test checks that every URL rule of the app is in the document, and fuzzes
the app against it.
"""

from __future__ import annotations

from importlib import metadata
from typing import get_args, get_origin

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from . import emporix, registration, schemas
from .admin import OPERATIONS
from .admin.auth import MANAGE_SCOPE, READ_SCOPE
from .admin.errors import Error
from .admin.query import Param
from .admin.schema import ComponentSchema
from .schemas import Endpoint, Reply
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
_RETRY = {"Retry-After": "Seconds."}
_CHALLENGE = {"WWW-Authenticate": "RFC 6750 §3 challenge."}
_PATH_ID = {"type": "string", "minLength": 1, "maxLength": 128}
IF_MATCH = Param(
    "If-Match",
    {"type": "string", "pattern": '^(\\*|"[0-9]{1,9}")$'},
    "The `ETag` last read: 412 if the resource changed since.",
)


def _admin_replies(op, successes: dict[int, Reply], errors: set[int]) -> dict[int, Reply]:
    """`successes`, and the admin API's Error answer for each of `errors`."""
    if op.body is not None:
        errors |= {400, 422}
    if op.query:
        errors.add(400)
    replies = dict(successes)
    for status in errors:
        headers = _RETRY if status in (429, 503) else _CHALLENGE if status in (401, 403) else {}
        replies[status] = Reply(ERROR_RESPONSES[status], Error, headers=headers)
    return replies


def _common(op, replies: dict[int, Reply], **fields) -> Endpoint:
    return Endpoint(
        op.method,
        op.path,
        summary=op.summary,
        tag=op.tag,
        replies=replies,
        description=op.description,
        path_params=tuple(Param(name, _PATH_ID) for name in op.path_params),
        query=op.query,
        body=op.body,
        **fields,
    )


def _admin(op) -> Endpoint:
    successes = {}
    for status, model in op.responses.items():
        headers = {}
        if op.etag and status in (200, 201):
            headers["ETag"] = "The version, for `If-Match`."
        if status == 201:
            headers["Location"] = "URL of the new resource."
        successes[status] = Reply("Success.", model, headers=headers)
    errors = {401, 403, 503}
    if op.body is not None or op.path_params:
        errors.add(404)
    if op.write or op.conflicts:
        errors.add(409)
    if op.write and op.etag:
        errors.add(412)
    scope = MANAGE_SCOPE if op.write else READ_SCOPE
    return _common(
        op,
        _admin_replies(op, successes, errors),
        operation_id=op.endpoint,
        security=({"adminToken": [scope]},),
        headers=(IF_MATCH,) if op.etag and op.write else (),
    )


def _self_service(op) -> Endpoint:
    errors = set(op.errors) | {503}
    if op.scope is not None:
        errors |= {401, 403}
    if op.path_params:
        errors.add(404)
    successes = {status: Reply("Success.", model) for status, model in op.responses.items()}
    return _common(
        op,
        _admin_replies(op, successes, errors),
        operation_id=f"self_service_{op.endpoint}",
        security=({"customerToken": [op.scope]},) if op.scope else (),
    )


def _schema(body, models: set) -> dict:
    """A model's reference (its schema joins `models`), a list of them, or an inline schema."""
    if isinstance(body, dict):
        return body
    if get_origin(body) is list:
        return {"type": "array", "items": _schema(get_args(body)[0], models)}
    models.add(body)
    return {"$ref": REF + body.__name__}


def _reply(reply: Reply, models: set) -> dict:
    result: dict = {"description": reply.description}
    if reply.headers:
        result["headers"] = {
            name: {
                "description": description,
                "schema": {"type": "integer" if name == "Retry-After" else "string"},
            }
            for name, description in reply.headers.items()
        }
    if reply.body is not None:
        result["content"] = {reply.media: {"schema": _schema(reply.body, models)}}
    return result


def _operation(endpoint: Endpoint, models: set) -> dict:
    """The OpenAPI operation of `endpoint`; every model it names is added to `models`."""
    parameters = [
        {
            "name": param.name,
            "in": where,
            "required": where == "path" or param.required,
            "schema": param.schema,
            **({"description": param.description} if param.description else {}),
        }
        for where, params in (
            ("path", endpoint.path_params),
            ("query", endpoint.query),
            ("header", endpoint.headers),
        )
        for param in params
    ]
    result = {
        "tags": [endpoint.tag],
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "security": list(endpoint.security),
        "parameters": parameters,
        "responses": {
            str(status): _reply(reply, models) for status, reply in sorted(endpoint.replies.items())
        },
    }
    if endpoint.description:
        result["description"] = endpoint.description
    if endpoint.body is not None:
        content = {endpoint.media: {"schema": _schema(endpoint.body, models)}}
        result["requestBody"] = {"required": True, "content": content}
    return result


def endpoints() -> list[Endpoint]:
    """Every documented route, in the document's order."""
    return [
        *schemas.PUBLIC,
        *registration.ENDPOINTS,
        *schemas.FRONT_DOOR,
        *map(_admin, OPERATIONS),
        *map(_self_service, SELF_SERVICE_OPERATIONS),
        *emporix.ENDPOINTS,
    ]


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


CUSTOMER_SCOPES = {
    "customer.customer_read_own": "Read the entity's members, groups and audit events.",
    "customer.customer_manage_own": "Invite into the entity.",
    "iam.assignment_create_own": "Add members to the entity's groups.",
    "iam.assignment_delete_own": "Remove members from groups or from the entity.",
}
ADMIN_SCOPES = {
    READ_SCOPE: "Read the directory, keys and audit events.",
    MANAGE_SCOPE: "Change them (includes reading).",
}


def _http(scheme: str, description: str) -> dict:
    return {"type": "http", "scheme": scheme, "description": description}


def _oauth2(description: str, *, issuer: str, **flows: dict) -> dict:
    """An OAuth 2 security scheme whose flows all use our token endpoint."""
    for flow in flows.values():
        flow["tokenUrl"] = f"{issuer}/oauth/token"
    return {"type": "oauth2", "description": description, "flows": flows}


def build_document(issuer: str) -> dict:
    """The whole OpenAPI 3.1 document for a service at `issuer`."""
    models: set[type[BaseModel]] = set()
    paths: dict[str, dict] = {}
    described = endpoints()
    for endpoint in described:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, models)
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
            for name in dict.fromkeys(["OAuth", *(endpoint.tag for endpoint in described)])
        ],
        "paths": paths,
        "components": {
            "schemas": _component_schemas(models),
            "securitySchemes": {
                "clientBasic": _http("basic", "client_secret_basic (RFC 6749 §2.3.1)."),
                "bearerToken": _http("bearer", "A customer's access token (RFC 6750)."),
                "registrationToken": _http(
                    "bearer",
                    "An initial access token (RFC 7591 §3, for POST /oauth/register) or a "
                    "registration access token (RFC 7592, for /oauth/register/{client_id}).",
                ),
                "emporixAnonymousToken": _http(
                    "bearer",
                    "An anonymous token from `/customerlogin/auth/anonymous/login` "
                    "(Emporix-compatible layer only).",
                ),
                "customerToken": _oauth2(
                    "A customer's bearer access token acting for a legal entity "
                    "(`legal_entity_id`): self-service is confined to that entity.",
                    authorizationCode={
                        "authorizationUrl": f"{issuer}/oauth/authorize",
                        "refreshUrl": f"{issuer}/oauth/token",
                        "scopes": CUSTOMER_SCOPES,
                    },
                    issuer=issuer,
                ),
                "adminToken": _oauth2(
                    "A bearer access token from client_credentials.",
                    clientCredentials={"scopes": ADMIN_SCOPES},
                    issuer=issuer,
                ),
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
