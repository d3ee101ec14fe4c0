"""/admin/clients: OAuth clients (storefronts, services, admin tools)."""

from __future__ import annotations

from typing import Annotated, Literal

from flask import current_app, url_for
from pydantic import Field
from sqlalchemy import select

from ...extensions import db
from ...models import Client, Session
from ...revocation import fence_issuance, revoke_session
from ...services import clients
from . import representations as rep
from .errors import ApiError
from .query import page
from .routing import actor, for_change, found, no_content, operation, principal, record, respond
from .schema import ID_PATTERN, Body, Email, Name, text

TAG = "Clients"
CLIENT_ID = "<client_id>"
INT32 = 2**31 - 1
GrantTypes = Annotated[
    list[Literal[clients.GRANT_TYPES]],
    Field(
        min_length=1,
        max_length=4,
        description="password needs first_party; client_credentials needs a confidential "
        "client; authorization_code needs redirect_uris.",
    ),
]
RedirectUris = Annotated[
    list[text(2000)],
    Field(
        max_length=20,
        description="RFC 7591 §2: exact URIs (https, or http on localhost); nothing else is "
        "redirected to.",
    ),
]
AllowedOrigins = Annotated[
    list[text(300)] | None,
    Field(
        max_length=20,
        description="Origins (scheme://host[:port]; https, or http on localhost) whose browser "
        "apps may call the token, revocation, userinfo, self-service and Emporix endpoints "
        "(CORS). null: the origins of redirect_uris; []: none.",
    ),
]
ClientScope = Annotated[
    text(4096),
    Field(description="The scope ceiling, space-separated catalogue scopes."),
]
Ttl = Annotated[int, Field(ge=1, le=INT32)]
AccessTtl = Annotated[
    Ttl | None,
    Field(
        description="Seconds; at most TOKEN_SERVICE_ACCESS_TOKEN_TTL_MAX (422 above); null: "
        "default."
    ),
]
RefreshTtl = Annotated[
    Ttl | None,
    Field(
        description="Absolute session lifetime in seconds; at most "
        "TOKEN_SERVICE_REFRESH_ABSOLUTE_TTL (422 above); null: default."
    ),
]


AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
WebUri = Annotated[
    text(2000) | None,
    Field(description="RFC 7591 §2: an absolute https URI (or http on localhost); null clears."),
]


class ClientUpdate(Body):
    """RFC 7591 §2 metadata by its names; `name` and `confidential` are older aliases of
    `client_name` and `token_endpoint_auth_method` (both given: they must agree)."""

    name: Name = None
    client_name: Name = None
    token_endpoint_auth_method: Annotated[
        Literal[AUTH_METHODS],
        Field(
            description="none: a public client (no secret); client_secret_basic or "
            "client_secret_post: a confidential one, which may use either (answered as "
            "client_secret_basic). Cannot change after creation."
        ),
    ] = None
    response_types: Annotated[
        list[Literal["code"]],
        Field(max_length=1, description='["code"] (needs authorization_code) or [].'),
    ] = None
    client_uri: WebUri = None
    logo_uri: WebUri = None
    policy_uri: WebUri = None
    tos_uri: WebUri = None
    contacts: Annotated[list[Email] | None, Field(max_length=20)] = None
    backchannel_logout_uri: Annotated[
        text(2000) | None,
        Field(
            description="Back-Channel Logout 1.0: as redirect_uris (https, or http on "
            "localhost; no fragment); null clears."
        ),
    ] = None
    backchannel_logout_session_required: bool = None
    grant_types: GrantTypes = None
    scope: ClientScope = None
    first_party: Annotated[
        bool,
        Field(description="May use the password grant and skips consent (default false)."),
    ] = None
    audience: Name | None = None
    access_token_ttl: AccessTtl = None
    refresh_token_ttl: RefreshTtl = None
    redirect_uris: RedirectUris = None
    post_logout_redirect_uris: RedirectUris = None
    allowed_origins: AllowedOrigins = None


class ClientCreate(ClientUpdate):
    client_id: text(128, pattern=ID_PATTERN)
    confidential: Annotated[bool, Field(description="Has a secret (default true).")] = None
    grant_types: Annotated[
        GrantTypes, Field(description='Default (RFC 7591 §2): ["authorization_code"].')
    ] = None


def _conflict(fields: dict[str, str]) -> ApiError:
    return ApiError(
        422,
        "validation_failed",
        "Conflicting fields: " + ", ".join(sorted(fields)) + ".",
        fields=fields,
    )


def internal(body: dict, *, public: bool | None = None) -> dict:
    """A body in RFC 7591 names (and the older aliases) as the directory's changes: `name`,
    `confidential` (only when the body decides it), the rest as they are. Conflicts are a
    422 naming both fields; `public` is the existing client's kind (an update)."""
    body = dict(body)
    out = {}
    if "client_name" in body:
        client_name = body.pop("client_name")
        if "name" in body and body["name"] != client_name:
            raise _conflict({"client_name": "differs from name", "name": "differs"})
        body["name"] = client_name
    method = body.pop("token_endpoint_auth_method", None)
    if method is not None:
        confidential = method != "none"
        if "confidential" in body and body["confidential"] != confidential:
            raise _conflict(
                {
                    "confidential": f"contradicts token_endpoint_auth_method {method}",
                    "token_endpoint_auth_method": "contradicts confidential",
                }
            )
        if public is not None and public == confidential:
            raise ApiError.of(
                422,
                "token_endpoint_auth_method cannot change a client between public and "
                "confidential: register a new client",
                "token_endpoint_auth_method",
            )
        body["confidential"] = confidential
    response_types = body.pop("response_types", None)
    if response_types and "grant_types" in body and "authorization_code" not in body["grant_types"]:
        raise _conflict(
            {
                "response_types": "code needs the authorization_code grant type",
                "grant_types": "lacks authorization_code for response_types code",
            }
        )
    out.update(body)
    return out


def create(body: dict, *, first_party: bool, registration_access_token_hash=None):
    """A client from a body in the directory's names (see `internal`): the admin API's and
    the registration endpoint's one way of creating one."""
    client, secret = clients.create_client(
        body["client_id"],
        name=body.get("name", ""),
        confidential=body.get("confidential", True),
        grant_types=list(dict.fromkeys(body.get("grant_types") or ["authorization_code"])),
        scope=body.get("scope", ""),
        first_party=first_party,
        audience=body.get("audience"),
        redirect_uris=body.get("redirect_uris", []),
        post_logout_redirect_uris=body.get("post_logout_redirect_uris", []),
        allowed_origins=body.get("allowed_origins"),
        metadata={k: body[k] for k in clients.CLIENT_METADATA if k in body},
    )
    client.registration_access_token_hash = registration_access_token_hash
    return client, secret


def remove(client_id: str, actor_type: str, actor_id: str | None) -> None:
    """Delete a client after revoking its live sessions (the admin API's and RFC 7592's)."""
    live = select(Session).where(Session.client_id == client_id, Session.revoked_at.is_(None))
    sessions = list(db.session.scalars(live))
    # Every customer at once, in id order (one by one, two deletions could deadlock). A login
    # racing this waits for the client's row, locked above, then fails its foreign key: it
    # writes no session and answers no token.
    fence_issuance({session.customer_id for session in sessions})
    for session in sessions:
        revoke_session(session, "client_deleted", actor_type=actor_type, actor_id=actor_id)
    clients.delete_client(client_id)


def _limits() -> dict:
    settings = current_app.config["SETTINGS"]
    return {
        "max_access_ttl": settings.access_token_ttl_max,
        "max_refresh_ttl": settings.refresh_absolute_ttl,
    }


@operation(
    "POST",
    "/clients",
    summary="Register a client",
    tag=TAG,
    body=ClientCreate,
    responses={201: rep.ClientWithSecret},
    conflicts=True,
)
def create_client(body: dict):
    """RFC 7591 §2 metadata in, RFC 7591 §3.2.1 out. A confidential client's secret is in
    this response only: it is stored as a hash."""
    body = internal(body)
    client, secret = create(body, first_party=body.get("first_party", False))
    clients.set_client_lifetimes(client, body, **_limits())
    record("client.created", target=client.client_id, grant_types=client.grant_types.split())
    db.session.flush()
    location = url_for("admin.get_client", client_id=client.client_id)
    return respond(rep.client_with_secret(client, secret), 201, client.version, location)


@operation(
    "GET",
    "/clients",
    summary="List clients",
    tag=TAG,
    paginated=True,
    responses={200: rep.page_of(rep.Client)},
)
def list_clients():
    """Ordered by client id."""
    return page(select(Client), [(Client.client_id, False)], rep.client)


@operation(
    "GET",
    f"/clients/{CLIENT_ID}",
    summary="Get a client",
    tag=TAG,
    responses={200: rep.Client},
    etag=True,
)
def get_client(client_id: str):
    client = found(Client, client_id, "client")
    return respond(rep.client(client), version=client.version)


@operation(
    "PATCH",
    f"/clients/{CLIENT_ID}",
    summary="Update a client",
    tag=TAG,
    body=ClientUpdate,
    responses={200: rep.Client},
    etag=True,
)
def update_client(client_id: str, body: dict):
    """A narrower ceiling applies to new logins; existing sessions keep the ceiling they
    started with (DESIGN section 3)."""
    existing = for_change(Client, client_id, "client")
    changes = internal(body, public=existing.is_public)
    changes.pop("confidential", None)  # agrees with the client (checked by `internal`)
    client = clients.update_client(client_id, changes, **_limits())
    record("client.updated", target=client_id, changed=sorted(body))
    return respond(rep.client(client), version=client.version)


@operation(
    "POST",
    f"/clients/{CLIENT_ID}/rotate-secret",
    summary="Rotate a client's secret",
    tag=TAG,
    responses={200: rep.ClientWithSecret},
    conflicts=True,
    etag=True,
)
def rotate_secret(client_id: str):
    """The old secret stops working now; the new one is in this response only."""
    client = for_change(Client, client_id, "client")
    secret = clients.rotate_client_secret(client_id)
    record("client.secret_rotated", target=client_id)
    return respond(rep.client_with_secret(client, secret), version=client.version)


@operation(
    "DELETE",
    f"/clients/{CLIENT_ID}",
    summary="Delete a client",
    tag=TAG,
    responses={204: None},
    conflicts=True,
    etag=True,
)
def delete_client(client_id: str):
    """Its customers' sessions are revoked first, so their access tokens stop at once. A
    client cannot delete itself (409): that would lock its admin out."""
    for_change(Client, client_id, "client")
    if client_id == principal().client_id:
        raise ApiError.of(409, "a client cannot delete itself")
    kind, who = actor()
    remove(client_id, kind, who)
    record("client.deleted", target=client_id)
    return no_content()
