"""/admin/clients: OAuth clients (storefronts, services, admin tools)."""

from __future__ import annotations

from typing import Annotated, Literal

from flask import current_app, url_for
from pydantic import Field
from sqlalchemy import select

from ... import directory
from ...extensions import db
from ...models import Client, Session
from ...revocation import fence_issuance, revoke_session
from . import representations as rep
from .errors import ApiError
from .query import page
from .routing import actor, for_change, found, no_content, operation, principal, record, respond
from .schema import ID_PATTERN, Body, Name, text

TAG = "Clients"
CLIENT_ID = "<client_id>"
INT32 = 2**31 - 1
GrantTypes = Annotated[
    list[Literal[directory.GRANT_TYPES]],
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


class ClientUpdate(Body):
    name: Name = None
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
    grant_types: GrantTypes


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
    """A confidential client's secret is in this response only: it is stored as a hash."""
    client, secret = directory.create_client(
        body["client_id"],
        name=body.get("name", ""),
        confidential=body.get("confidential", True),
        grant_types=list(dict.fromkeys(body["grant_types"])),
        scope=body.get("scope", ""),
        first_party=body.get("first_party", False),
        audience=body.get("audience"),
        redirect_uris=body.get("redirect_uris", []),
        post_logout_redirect_uris=body.get("post_logout_redirect_uris", []),
        allowed_origins=body.get("allowed_origins"),
    )
    directory.set_client_lifetimes(client, body, **_limits())
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
    for_change(Client, client_id, "client")
    client = directory.update_client(client_id, body, **_limits())
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
    secret = directory.rotate_client_secret(client_id)
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
    live = select(Session).where(Session.client_id == client_id, Session.revoked_at.is_(None))
    sessions = list(db.session.scalars(live))
    # Every customer at once, in id order (one by one, two deletions could deadlock). A login
    # racing this waits for the client's row, locked above, then fails its foreign key: it
    # writes no session and answers no token.
    fence_issuance({session.customer_id for session in sessions})
    for session in sessions:
        revoke_session(session, "client_deleted", actor_type=kind, actor_id=who)
    directory.delete_client(client_id)
    record("client.deleted", target=client_id)
    return no_content()
