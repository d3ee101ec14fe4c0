"""What the admin API returns for each resource: a model per representation (its JSON Schema is
the OpenAPI component of that name) and the function that builds it from a row, through the
model, so that nothing is returned that the document does not describe.

Secrets never appear here: a customer's password hash and a client's secret hash stay in the
database (a new client secret is shown once, by the view that made it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import Field, create_model

from ... import models as orm
from .schema import Representation, Time

GrantType = Literal["authorization_code", "password", "refresh_token", "client_credentials"]


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, e.g. 2025-01-31T12:00:00.123456Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _build(model: type[Representation], row, **fields) -> dict:
    """`model`'s JSON: `fields`, and for every other field of the model the row's attribute of
    that name (a time in RFC 3339)."""
    for name in model.model_fields.keys() - fields.keys():
        value = getattr(row, name)
        fields[name] = iso(value) if isinstance(value, datetime) else value
    return model(**fields).model_dump()


class AccountLimit(Representation):
    """Credit limit of the legal entity."""

    currency: Annotated[str, Field(pattern="^[A-Z]{3}$", description="ISO 4217 code")]
    value: Annotated[float, Field(ge=0)]


class LegalEntity(Representation):
    """A company or a subsidiary (DESIGN section 2)."""

    id: str
    name: str
    type: Literal["COMPANY", "SUBSIDIARY"]
    parent_id: str | None
    account_limit: AccountLimit | None
    version: int
    created_at: Time
    updated_at: Time


def legal_entity(entity: orm.LegalEntity) -> dict:
    limit = None
    if entity.account_limit_currency is not None and entity.account_limit_value is not None:
        limit = AccountLimit(
            currency=entity.account_limit_currency, value=float(entity.account_limit_value)
        )
    return _build(LegalEntity, entity, account_limit=limit)


class Customer(Representation):
    """A buyer. The password itself or its hash is never returned."""

    id: str
    email: str
    status: Literal["active", "blocked", "invited"]
    has_password: bool
    default_legal_entity_id: str | None
    version: int
    created_at: Time
    updated_at: Time


def customer(row: orm.Customer) -> dict:
    return _build(Customer, row, has_password=row.password_hash is not None)


class Assignment(Representation):
    """A customer's assignment to a legal entity."""

    legal_entity_id: str
    legal_entity_name: str
    type: Literal["PRIMARY", "BILLING", "LOGISTICS", "CONTACT"]
    created_at: Time


def assignment(row, entity_name: str) -> dict:
    return _build(Assignment, row, legal_entity_name=entity_name)


class Group(Representation):
    """A customer group of a legal entity, or tenant-wide (`legal_entity_id` null)."""

    id: str
    name: str
    legal_entity_id: str | None
    code: Literal["ADMIN", "BUYER", "REQUESTER", "CONTACT", "CUSTOM"]
    predefined: bool
    scopes: list[str]
    version: int
    created_at: Time
    updated_at: Time


def group(row: orm.CustomerGroup, scopes: list[str]) -> dict:
    return _build(Group, row, scopes=sorted(scopes))


class Member(Representation):
    """A customer in a group."""

    customer_id: str
    email: str
    created_at: Time


def member(row, email: str) -> dict:
    return _build(Member, row, email=email)


class Scope(Representation):
    """A scope of the catalogue."""

    name: str
    description: str
    predefined: bool


def scope(row: orm.Scope) -> dict:
    return _build(Scope, row, description=row.description or "")


class Client(Representation):
    """An OAuth client, with its RFC 7591 §2 metadata by their names (RFC 7591 §3.2.1);
    `name` and `confidential` are the older names of `client_name` and
    `token_endpoint_auth_method`. Its secret is never returned."""

    client_id: str
    client_name: str
    name: str
    token_endpoint_auth_method: Annotated[
        Literal["none", "client_secret_basic"],
        Field(description="A confidential client may also use client_secret_post."),
    ]
    confidential: bool
    response_types: list[Literal["code"]]
    client_uri: str | None
    logo_uri: str | None
    policy_uri: str | None
    tos_uri: str | None
    contacts: list[str]
    backchannel_logout_uri: str | None
    backchannel_logout_session_required: bool
    client_id_issued_at: Annotated[int, Field(description="Unix time of its registration.")]
    client_secret_expires_at: Annotated[
        Literal[0], Field(description="0: its secret (if any) never expires.")
    ]
    grant_types: list[GrantType]
    scope: Annotated[str, Field(description="The scope ceiling, space-separated.")]
    first_party: bool
    audience: str | None
    access_token_ttl: int | None
    refresh_token_ttl: int | None
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    allowed_origins: Annotated[
        list[str] | None,
        Field(description="CORS origins of its browser apps; null: the origins of redirect_uris."),
    ]
    version: int
    created_at: Time
    updated_at: Time


class ClientWithSecret(Client):
    """A client with its new secret: store it now, it is never shown again."""

    client_secret: Annotated[str | None, Field(description="Shown once; null for a public client.")]


def _client_fields(row: orm.Client) -> dict:
    """The fields of a client that are not its row's attributes as they are."""
    grant_types = row.grant_types.split()
    return {
        "client_name": row.name,
        "token_endpoint_auth_method": "none" if row.is_public else "client_secret_basic",
        "confidential": not row.is_public,
        "response_types": ["code"] if "authorization_code" in grant_types else [],
        "grant_types": grant_types,
        "contacts": list(row.contacts or []),
        "backchannel_logout_session_required": bool(row.backchannel_logout_session_required),
        "client_id_issued_at": int(row.created_at.timestamp()),
        "client_secret_expires_at": 0,
        "redirect_uris": list(row.redirect_uris or []),
        "post_logout_redirect_uris": list(row.post_logout_redirect_uris or []),
    }


def client(row: orm.Client) -> dict:
    return _build(Client, row, **_client_fields(row))


def client_with_secret(row: orm.Client, secret: str | None) -> dict:
    """The client and its new secret (None for a public client)."""
    return _build(ClientWithSecret, row, **_client_fields(row), client_secret=secret)


class InitialAccessToken(Representation):
    """An initial access token for POST /oauth/register (RFC 7591 §3): store `token` now, it
    is never shown again."""

    id: str
    token: str
    expires_at: Time
    uses_left: int


class Session(Representation):
    """A login of a customer (refresh-token family)."""

    id: str
    customer_id: str
    client_id: str
    legal_entity_id: str | None
    scope: Annotated[str, Field(description="The session's ceiling.")]
    auth_time: Time
    created_at: Time
    last_used_at: Time
    expires_at: Annotated[
        Time, Field(description="When it ends unless refreshed (idle or absolute).")
    ]
    absolute_expires_at: Time
    revoked: bool
    revoked_at: Time | None
    revoked_reason: str | None


def session(row: orm.Session) -> dict:
    return _build(
        Session,
        row,
        expires_at=iso(min(row.idle_expires_at, row.expires_at)),
        absolute_expires_at=iso(row.expires_at),
        revoked=row.revoked_at is not None,
    )


class RevokedSessions(Representation):
    """How many live sessions a revocation ended."""

    revoked: int


class ScopeSource(Representation):
    """One scope and what grants it: `baseline` or group ids."""

    scope: str
    sources: list[str]


class EffectiveScopes(Representation):
    """The scopes a refresh would give now, and where each comes from."""

    customer_id: str
    legal_entity_id: str | None
    client_id: str | None
    customer_status: Literal["active", "blocked", "invited"]
    scope: Annotated[str, Field(description="Space-separated, as in the access token.")]
    scopes: list[ScopeSource]


class AuditEvent(Representation):
    """Who did what to whom, when."""

    id: int
    at: Time
    actor_type: Literal["customer", "client", "system"]
    actor_id: str | None
    action: str
    customer_id: str | None
    target: str | None
    details: dict[str, Any]


def audit_event(row: orm.AuditEvent) -> dict:
    return _build(AuditEvent, row, details=row.details or {})


class SigningKey(Representation):
    """A signing key: `signing` signs now, `published` is still in the JWKS for tokens it
    signed, `retired` is in neither."""

    kid: str
    alg: Literal["RS256", "ES256", "EdDSA"]
    created_at: Time
    state: Literal["signing", "published", "retired"]


def signing_key(key, state: str) -> dict:
    return _build(SigningKey, key, state=state)


@cache
def page_of(item: type[Representation]) -> type[Representation]:
    """The model of one page of a cursor-paginated list of `item` (`<Item>Page`)."""
    return create_model(
        f"{item.__name__}Page",
        __base__=Representation,
        __doc__=f"A page of {item.__name__} items.",
        items=(list[item], ...),
        next_cursor=(
            str | None,
            Field(description="Pass as `cursor` for the next page; null on the last page."),
        ),
    )
