"""Dynamic client registration: RFC 7591 (POST /oauth/register) and RFC 7592 (GET, PUT and
DELETE /oauth/register/{client_id}).

Closed by default: a registration needs `Authorization: Bearer <initial access token>`, which
an admin makes (POST /admin/initial-access-tokens, or `token-service initial-access-tokens
create`); each registration spends one of its uses, atomically. A client registered here is
third party (it always gets consent), may not use `client_credentials` or `password` (no
service accounts or password logins by self-registration), and its `scope` (default
`openid`) must be in the catalogue, without `admin.*` or `token.introspect`. It answers with a
registration access token (stored as a hash) for RFC 7592 at `registration_client_uri`; an
update replaces the metadata and keeps the secret. The same checks as the admin API's
(api/admin/clients.py, token_service.services.clients): one implementation of each rule.
"""

from __future__ import annotations

from typing import Annotated, Literal

from flask import Blueprint, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import audit, registration_tokens
from ..extensions import db
from ..models import new_id
from ..scopes import split_scopes
from ..security import hash_token, new_token
from ..services import clients
from ..services.base import ServiceError
from .admin import clients as admin_clients
from .admin import representations as rep
from .admin.errors import ApiError
from .admin.query import Param
from .admin.schema import Email, Name, field_errors, read_json, text
from .schemas import Endpoint, OAuthError, Reply

bp = Blueprint("registration", __name__)

#: Scopes a self-registered client may never ask for.
FORBIDDEN_SCOPES = ("token.introspect",)
FORBIDDEN_PREFIXES = ("admin.",)
#: Response fields of the admin representation that are not RFC 7591 metadata.
_ADMIN_ONLY = (
    "name",
    "confidential",
    "first_party",
    "audience",
    "access_token_ttl",
    "refresh_token_ttl",
    "allowed_origins",
    "version",
    "created_at",
    "updated_at",
)
_URI = text(2000)


class ClientMetadata(BaseModel):
    """RFC 7591 §2 client metadata. Unknown fields are ignored (RFC 7591 §2); the known ones
    are checked strictly."""

    model_config = ConfigDict(extra="ignore", strict=True, regex_engine="python-re")

    client_id: Annotated[str, Field(description="RFC 7592 update: must be the client's.")] = None
    client_name: Name = None
    token_endpoint_auth_method: Literal[admin_clients.AUTH_METHODS] = "client_secret_basic"
    grant_types: Annotated[
        list[Literal["authorization_code", "refresh_token"]], Field(min_length=1, max_length=2)
    ] = None
    response_types: Annotated[list[Literal["code"]], Field(max_length=1)] = None
    redirect_uris: Annotated[list[_URI], Field(max_length=20)] = None
    post_logout_redirect_uris: Annotated[list[_URI], Field(max_length=20)] = None
    scope: text(4096) = None
    client_uri: _URI | None = None
    logo_uri: _URI | None = None
    policy_uri: _URI | None = None
    tos_uri: _URI | None = None
    contacts: Annotated[list[Email] | None, Field(max_length=20)] = None
    backchannel_logout_uri: _URI | None = None
    backchannel_logout_session_required: bool = None


class ClientInformation(BaseModel):
    """RFC 7591 §3.2.1 / RFC 7592 §3: the client and how to manage it. Absent values are
    left out."""

    model_config = ConfigDict(extra="allow")

    client_id: str
    client_secret: Annotated[str, Field(description="At registration only.")] = None
    client_id_issued_at: int
    client_secret_expires_at: Literal[0]
    registration_access_token: str
    registration_client_uri: str
    token_endpoint_auth_method: str
    grant_types: list[str]
    redirect_uris: list[str]


class RegistrationError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _invalid_token(description: str) -> RegistrationError:
    return RegistrationError(401, "invalid_token", description)


@bp.errorhandler(RegistrationError)
def _registration_error(error: RegistrationError):
    db.session.rollback()
    headers = {"Cache-Control": "no-store"}
    if error.status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="invalid_token", error_description="{error}"'
    body = {"error": error.error, "error_description": error.description}
    return jsonify(body), error.status, headers


def _bearer() -> str:
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if kind.lower() != "bearer" or not token or len(token) > 512:
        raise _invalid_token("An Authorization: Bearer token is required.")
    return token


def _metadata_error(message: str, field: str | None) -> RegistrationError:
    uri_fields = ("redirect_uris", "post_logout_redirect_uris")
    code = "invalid_redirect_uri" if field and field.split("[")[0] in uri_fields else None
    return RegistrationError(400, code or "invalid_client_metadata", message)


def _read_metadata() -> dict:
    """The body as RFC 7591 metadata (the fields given), or a 400 per RFC 7591 §3.2.2."""
    try:
        body = read_json()
        return ClientMetadata.model_validate(body).model_dump(exclude_unset=True)
    except ApiError as exc:
        raise RegistrationError(400, "invalid_client_metadata", exc.message) from None
    except ValidationError as exc:
        fields = field_errors(exc)
        first = sorted(fields)[0]
        message = "; ".join(f"{name}: {problem}" for name, problem in sorted(fields.items()))
        raise _metadata_error(message, first) from None


def _checked(metadata: dict) -> dict:
    """RFC 7591 metadata as the directory's changes, with this endpoint's own limits."""
    metadata = dict(metadata)
    metadata.pop("client_id", None)
    metadata.setdefault("grant_types", ["authorization_code"])
    metadata.setdefault("scope", "openid")
    forbidden = [
        s
        for s in split_scopes(metadata["scope"])
        if s in FORBIDDEN_SCOPES or s.startswith(FORBIDDEN_PREFIXES)
    ]
    if forbidden:
        raise RegistrationError(
            400,
            "invalid_client_metadata",
            f"scope: not for self-registered clients: {' '.join(sorted(forbidden))}",
        )
    return metadata


def _changes(metadata: dict, *, public: bool | None = None) -> dict:
    try:
        return admin_clients.internal(metadata, public=public)
    except ApiError as exc:
        raise _metadata_error(exc.message, None) from None


def _information(client, token: str, secret: str | None = None) -> dict:
    issuer = current_app.config["SETTINGS"].issuer
    answer = {
        k: v for k, v in rep.client(client).items() if k not in _ADMIN_ONLY and v not in (None, [])
    }
    answer["grant_types"] = client.grant_types.split()
    answer["redirect_uris"] = list(client.redirect_uris or [])
    answer["response_types"] = answer.get("response_types", [])
    if secret is not None:
        answer["client_secret"] = secret
    answer["registration_access_token"] = token
    answer["registration_client_uri"] = f"{issuer}/oauth/register/{client.client_id}"
    return ClientInformation(**answer).model_dump(exclude_unset=True)


def _answer(body: dict, status: int = 200):
    return jsonify(body), status, {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _lifetimes() -> dict:
    settings = current_app.config["SETTINGS"]
    return {
        "max_access_ttl": settings.access_token_ttl_max,
        "max_refresh_ttl": settings.refresh_absolute_ttl,
    }


@bp.post("/oauth/register")
def register():
    token = _bearer()
    if not registration_tokens.usable(token):
        raise _invalid_token("The initial access token is unknown, expired or used up.")
    changes = _changes(_checked(_read_metadata()))
    if not registration_tokens.use(token):  # another registration took the last use
        raise _invalid_token("The initial access token is unknown, expired or used up.")
    management_token = new_token()
    changes["client_id"] = new_id("dyn")
    try:
        client, secret = admin_clients.create(
            changes,
            first_party=False,
            registration_access_token_hash=hash_token(management_token),
        )
    except ServiceError as exc:
        raise _metadata_error(str(exc), exc.field) from None
    audit.record(
        "client.registered",
        actor_type="client",
        actor_id=client.client_id,
        target=client.client_id,
        grant_types=client.grant_types.split(),
    )
    answer = _information(client, management_token, secret)
    db.session.commit()
    return _answer(answer, 201)


def _managed(client_id: str, *, lock: bool = False):
    token = _bearer()
    client = registration_tokens.client_for(client_id, token, lock=lock)
    if client is None:
        raise _invalid_token("The registration access token is not valid for this client.")
    return client, token


@bp.get("/oauth/register/<client_id>")
def read_registration(client_id: str):
    client, token = _managed(client_id)
    answer = _information(client, token)
    db.session.rollback()
    return _answer(answer)


@bp.put("/oauth/register/<client_id>")
def update_registration(client_id: str):
    client, token = _managed(client_id, lock=True)
    metadata = _read_metadata()
    if metadata.get("client_id") != client_id:
        raise RegistrationError(
            400, "invalid_client_metadata", "client_id: must be this client's (RFC 7592 §2.2)"
        )
    changes = _changes(_checked(metadata), public=client.is_public)
    changes.pop("confidential", None)
    # RFC 7592 §2.2: a field left out is cleared.
    replaced = {
        "name": client_id,
        "redirect_uris": [],
        "post_logout_redirect_uris": [],
        **{name: None for name in ("client_uri", "logo_uri", "policy_uri", "tos_uri")},
        "contacts": None,
        "backchannel_logout_uri": None,
        "backchannel_logout_session_required": False,
        **changes,
    }
    try:
        client = clients.update_client(client_id, replaced, **_lifetimes())
    except ServiceError as exc:
        raise _metadata_error(str(exc), exc.field) from None
    audit.record(
        "client.updated",
        actor_type="client",
        actor_id=client_id,
        target=client_id,
        changed=sorted(metadata),
    )
    answer = _information(client, token)
    db.session.commit()
    return _answer(answer)


@bp.delete("/oauth/register/<client_id>")
def delete_registration(client_id: str):
    _managed(client_id, lock=True)
    admin_clients.remove(client_id, "client", client_id)
    audit.record("client.deleted", actor_type="client", actor_id=client_id, target=client_id)
    db.session.commit()
    return "", 204, {"Cache-Control": "no-store"}


# -- what the OpenAPI document says (api/openapi.py) ------------------------------------------

_BEARER = ({"registrationToken": []},)
_ERRORS = {
    400: Reply("invalid_client_metadata or invalid_redirect_uri (RFC 7591 §3.2.2).", OAuthError),
    401: Reply(
        "invalid_token: no token, or an unknown, expired or used-up one.",
        OAuthError,
        headers={"WWW-Authenticate": "RFC 6750 §3 challenge."},
    ),
}
_CLIENT_ID = (
    Param("client_id", {"type": "string", "minLength": 1, "maxLength": 128}, "Its id.", True),
)
ENDPOINTS = [
    Endpoint(
        "POST",
        "/oauth/register",
        "register_client",
        "Registration",
        "Dynamic client registration (RFC 7591)",
        {201: Reply("The registered client.", ClientInformation), **_ERRORS},
        __doc__,
        _BEARER,
        body=ClientMetadata,
    ),
    Endpoint(
        "GET",
        "/oauth/register/{client_id}",
        "read_registration",
        "Registration",
        "Read a registration (RFC 7592 §2.1)",
        {200: Reply("The client.", ClientInformation), 401: _ERRORS[401]},
        "With the registration access token.",
        _BEARER,
        path_params=_CLIENT_ID,
    ),
    Endpoint(
        "PUT",
        "/oauth/register/{client_id}",
        "update_registration",
        "Registration",
        "Replace a registration's metadata (RFC 7592 §2.2)",
        {200: Reply("The client.", ClientInformation), **_ERRORS},
        "Fields left out are cleared; the secret is kept.",
        _BEARER,
        path_params=_CLIENT_ID,
        body=ClientMetadata,
    ),
    Endpoint(
        "DELETE",
        "/oauth/register/{client_id}",
        "delete_registration",
        "Registration",
        "Delete a registration (RFC 7592 §2.3)",
        {204: Reply("Deleted; its sessions are revoked."), 401: _ERRORS[401]},
        "With the registration access token.",
        _BEARER,
        path_params=_CLIENT_ID,
    ),
]
