"""/admin/clients: OAuth clients (storefronts, services, admin tools)."""

from __future__ import annotations

from flask import current_app, url_for
from sqlalchemy import select

from ... import audit, directory
from ...extensions import db
from ...models import Client, Session
from ...revocation import fence_issuance, revoke_session
from . import representations as rep
from .errors import ApiError, not_found
from .query import page
from .routing import actor, check_version, no_content, operation, principal, respond
from .schema import ID_PATTERN, TEXT_PATTERN, Arr, Bool, Int, Obj, Prop, Str, validated

TAG = "Clients"
CLIENT_ID = "<client_id>"
INT32 = 2**31 - 1
GRANT_TYPES = Arr(
    Str(enum=directory.GRANT_TYPES),
    max_items=4,
    min_items=1,
    description="password needs first_party; client_credentials needs a confidential client; "
    "authorization_code needs redirect_uris.",
)
REDIRECT_URIS = Arr(
    Str(max_length=2000),
    max_items=20,
    description="RFC 7591 §2: exact URIs (https, or http on localhost); nothing else is "
    "redirected to.",
)
SCOPE = Str(max_length=4096, description="The scope ceiling, space-separated catalogue scopes.")
ACCESS_TTL = Int(
    minimum=1,
    maximum=INT32,
    nullable=True,
    description="Seconds; at most TOKEN_SERVICE_ACCESS_TOKEN_TTL_MAX (422 above); null: default.",
)
REFRESH_TTL = Int(
    minimum=1,
    maximum=INT32,
    nullable=True,
    description="Absolute session lifetime in seconds; at most "
    "TOKEN_SERVICE_REFRESH_ABSOLUTE_TTL (422 above); null: default.",
)
CREATE = Obj(
    {
        "client_id": Prop(Str(max_length=128, pattern=ID_PATTERN), required=True),
        "name": Prop(Str(pattern=TEXT_PATTERN)),
        "confidential": Prop(Bool(description="Has a secret (default true).")),
        "grant_types": Prop(GRANT_TYPES, required=True),
        "scope": Prop(SCOPE),
        "first_party": Prop(
            Bool(description="May use the password grant and skips consent (default false).")
        ),
        "audience": Prop(Str(pattern=TEXT_PATTERN, nullable=True)),
        "access_token_ttl": Prop(ACCESS_TTL),
        "refresh_token_ttl": Prop(REFRESH_TTL),
        "redirect_uris": Prop(REDIRECT_URIS),
        "post_logout_redirect_uris": Prop(REDIRECT_URIS),
    }
)
UPDATE = Obj(
    {
        "name": Prop(Str(pattern=TEXT_PATTERN)),
        "grant_types": Prop(GRANT_TYPES),
        "scope": Prop(SCOPE),
        "first_party": Prop(Bool()),
        "audience": Prop(Str(pattern=TEXT_PATTERN, nullable=True)),
        "access_token_ttl": Prop(ACCESS_TTL),
        "refresh_token_ttl": Prop(REFRESH_TTL),
        "redirect_uris": Prop(REDIRECT_URIS),
        "post_logout_redirect_uris": Prop(REDIRECT_URIS),
    }
)


def _client(client_id: str, *, lock: bool = False) -> Client:
    client = db.session.get(Client, client_id, with_for_update=lock)
    if client is None:
        raise not_found("client")
    return client


def _limits() -> dict:
    settings = current_app.config["SETTINGS"]
    return {
        "max_access_ttl": settings.access_token_ttl_max,
        "max_refresh_ttl": settings.refresh_absolute_ttl,
    }


def _record(action: str, target: str, **details) -> None:
    kind, who = actor()
    audit.record(action, actor_type=kind, actor_id=who, target=target, **details)


@operation(
    "POST",
    "/clients",
    summary="Register a client",
    tag=TAG,
    body=CREATE,
    body_name="ClientCreate",
    responses={201: "ClientWithSecret"},
    conflicts=True,
)
def create_client():
    """A confidential client's secret is in this response only: it is stored as a hash."""
    body = validated(CREATE)
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
    )
    directory.set_client_lifetimes(client, body, **_limits())
    _record("client.created", client.client_id, grant_types=client.grant_types.split())
    db.session.flush()
    location = url_for("admin.get_client", client_id=client.client_id)
    return respond({**rep.client(client), "client_secret": secret}, 201, client.version, location)


@operation(
    "GET",
    "/clients",
    summary="List clients",
    tag=TAG,
    paginated=True,
    responses={200: "ClientPage"},
)
def list_clients():
    """Ordered by client id."""
    return page(select(Client), [(Client.client_id, False)], rep.client)


@operation(
    "GET",
    f"/clients/{CLIENT_ID}",
    summary="Get a client",
    tag=TAG,
    responses={200: "Client"},
    etag=True,
)
def get_client(client_id: str):
    client = _client(client_id)
    return respond(rep.client(client), version=client.version)


@operation(
    "PATCH",
    f"/clients/{CLIENT_ID}",
    summary="Update a client",
    tag=TAG,
    body=UPDATE,
    body_name="ClientUpdate",
    responses={200: "Client"},
    etag=True,
)
def update_client(client_id: str):
    """A narrower ceiling applies to new logins; existing sessions keep the ceiling they
    started with (DESIGN section 3)."""
    body = validated(UPDATE)
    check_version(_client(client_id, lock=True).version)
    client = directory.update_client(client_id, body, **_limits())
    _record("client.updated", client_id, changed=sorted(body))
    return respond(rep.client(client), version=client.version)


@operation(
    "POST",
    f"/clients/{CLIENT_ID}/rotate-secret",
    summary="Rotate a client's secret",
    tag=TAG,
    responses={200: "ClientWithSecret"},
    conflicts=True,
    etag=True,
)
def rotate_secret(client_id: str):
    """The old secret stops working now; the new one is in this response only."""
    check_version(_client(client_id, lock=True).version)
    secret = directory.rotate_client_secret(client_id)
    _record("client.secret_rotated", client_id)
    client = _client(client_id)
    return respond({**rep.client(client), "client_secret": secret}, version=client.version)


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
    client = _client(client_id, lock=True)
    check_version(client.version)
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
    _record("client.deleted", client_id)
    return no_content()
