"""What the admin API returns for each resource, next to the JSON Schema that documents it.

Secrets never appear here: a customer's password hash and a client's secret hash stay in the
database (a new client secret is shown once, by the view that made it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ...models import (
    AuditEvent,
    Client,
    Customer,
    CustomerGroup,
    LegalEntity,
    Scope,
    Session,
)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, e.g. 2025-01-31T12:00:00.123456Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def legal_entity(entity: LegalEntity) -> dict:
    limit = None
    if entity.account_limit_currency is not None and entity.account_limit_value is not None:
        limit = {
            "currency": entity.account_limit_currency,
            "value": float(entity.account_limit_value),
        }
    return {
        "id": entity.id,
        "name": entity.name,
        "type": entity.type,
        "parent_id": entity.parent_id,
        "account_limit": limit,
        "version": entity.version,
        "created_at": iso(entity.created_at),
        "updated_at": iso(entity.updated_at),
    }


def customer(row: Customer) -> dict:
    return {
        "id": row.id,
        "email": row.email,
        "status": row.status,
        "has_password": row.password_hash is not None,
        "default_legal_entity_id": row.default_legal_entity_id,
        "version": row.version,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def assignment(row, entity_name: str) -> dict:
    return {
        "legal_entity_id": row.legal_entity_id,
        "legal_entity_name": entity_name,
        "type": row.type,
        "created_at": iso(row.created_at),
    }


def group(row: CustomerGroup, scopes: list[str]) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "legal_entity_id": row.legal_entity_id,
        "code": row.code,
        "predefined": row.predefined,
        "scopes": sorted(scopes),
        "version": row.version,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def member(row, email: str) -> dict:
    return {"customer_id": row.customer_id, "email": email, "created_at": iso(row.created_at)}


def scope(row: Scope) -> dict:
    return {"name": row.name, "description": row.description or "", "predefined": row.predefined}


def client(row: Client) -> dict:
    return {
        "client_id": row.client_id,
        "name": row.name,
        "confidential": not row.is_public,
        "grant_types": row.grant_types.split(),
        "scope": row.scope,
        "first_party": row.first_party,
        "audience": row.audience,
        "access_token_ttl": row.access_token_ttl,
        "refresh_token_ttl": row.refresh_token_ttl,
        "redirect_uris": list(row.redirect_uris or []),
        "post_logout_redirect_uris": list(row.post_logout_redirect_uris or []),
        "version": row.version,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def session(row: Session) -> dict:
    return {
        "id": row.id,
        "customer_id": row.customer_id,
        "client_id": row.client_id,
        "legal_entity_id": row.legal_entity_id,
        "scope": row.scope,
        "auth_time": iso(row.auth_time),
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at),
        "expires_at": iso(min(row.idle_expires_at, row.expires_at)),
        "absolute_expires_at": iso(row.expires_at),
        "revoked": row.revoked_at is not None,
        "revoked_at": iso(row.revoked_at),
        "revoked_reason": row.revoked_reason,
    }


def audit_event(row: AuditEvent) -> dict:
    return {
        "id": row.id,
        "at": iso(row.at),
        "actor_type": row.actor_type,
        "actor_id": row.actor_id,
        "action": row.action,
        "customer_id": row.customer_id,
        "target": row.target,
        "details": row.details or {},
    }


def signing_key(key, state: str) -> dict:
    return {"kid": key.kid, "alg": key.alg, "created_at": iso(key.created_at), "state": state}


# -- JSON Schemas of the above (components of the OpenAPI document) --------------------------

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": ["string", "null"], "format": "date-time"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}


def _object(summary: str, /, **properties: Any) -> dict:
    return {
        "type": "object",
        "description": summary,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


ACCOUNT_LIMIT = _object(
    "Credit limit of the legal entity.",
    currency={"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code"},
    value={"type": "number", "minimum": 0},
)

CLIENT_PROPERTIES = {
    "client_id": _STR,
    "name": _STR,
    "confidential": _BOOL,
    "grant_types": {
        "type": "array",
        "items": {
            "type": "string",
            "enum": ["authorization_code", "password", "refresh_token", "client_credentials"],
        },
    },
    "scope": {"type": "string", "description": "The scope ceiling, space-separated."},
    "first_party": _BOOL,
    "audience": _NSTR,
    "access_token_ttl": {"type": ["integer", "null"]},
    "refresh_token_ttl": {"type": ["integer", "null"]},
    "redirect_uris": {"type": "array", "items": _STR},
    "post_logout_redirect_uris": {"type": "array", "items": _STR},
    "version": _INT,
    "created_at": _TIME,
    "updated_at": _TIME,
}

SCHEMAS: dict[str, dict] = {
    "LegalEntity": _object(
        "A company or a subsidiary (DESIGN section 2).",
        id=_STR,
        name=_STR,
        type={"type": "string", "enum": ["COMPANY", "SUBSIDIARY"]},
        parent_id=_NSTR,
        account_limit={"oneOf": [{"$ref": "#/components/schemas/AccountLimit"}, {"type": "null"}]},
        version=_INT,
        created_at=_TIME,
        updated_at=_TIME,
    ),
    "AccountLimit": ACCOUNT_LIMIT,
    "Customer": _object(
        "A buyer. The password itself or its hash is never returned.",
        id=_STR,
        email={"type": "string"},
        status={"type": "string", "enum": ["active", "blocked", "invited"]},
        has_password=_BOOL,
        default_legal_entity_id=_NSTR,
        version=_INT,
        created_at=_TIME,
        updated_at=_TIME,
    ),
    "Assignment": _object(
        "A customer's assignment to a legal entity.",
        legal_entity_id=_STR,
        legal_entity_name=_STR,
        type={"type": "string", "enum": ["PRIMARY", "BILLING", "LOGISTICS", "CONTACT"]},
        created_at=_TIME,
    ),
    "Group": _object(
        "A customer group of a legal entity, or tenant-wide (`legal_entity_id` null).",
        id=_STR,
        name=_STR,
        legal_entity_id=_NSTR,
        code={"type": "string", "enum": ["ADMIN", "BUYER", "REQUESTER", "CONTACT", "CUSTOM"]},
        predefined=_BOOL,
        scopes={"type": "array", "items": _STR},
        version=_INT,
        created_at=_TIME,
        updated_at=_TIME,
    ),
    "Member": _object("A customer in a group.", customer_id=_STR, email=_STR, created_at=_TIME),
    "Scope": _object("A scope of the catalogue.", name=_STR, description=_STR, predefined=_BOOL),
    "Client": _object("An OAuth client. Its secret is never returned.", **CLIENT_PROPERTIES),
    "ClientWithSecret": _object(
        "A client with its new secret: store it now, it is never shown again.",
        **CLIENT_PROPERTIES,
        client_secret={
            "type": ["string", "null"],
            "description": "Shown once; null for a public client.",
        },
    ),
    "Session": _object(
        "A login of a customer (refresh-token family).",
        id=_STR,
        customer_id=_STR,
        client_id=_STR,
        legal_entity_id=_NSTR,
        scope={"type": "string", "description": "The session's ceiling."},
        auth_time=_TIME,
        created_at=_TIME,
        last_used_at=_TIME,
        expires_at={**_TIME, "description": "When it ends unless refreshed (idle or absolute)."},
        absolute_expires_at=_TIME,
        revoked=_BOOL,
        revoked_at=_NTIME,
        revoked_reason=_NSTR,
    ),
    "RevokedSessions": _object("How many live sessions a revocation ended.", revoked=_INT),
    "EffectiveScopes": _object(
        "The scopes a refresh would give now, and where each comes from.",
        customer_id=_STR,
        legal_entity_id=_NSTR,
        client_id=_NSTR,
        customer_status={"type": "string", "enum": ["active", "blocked"]},
        scope={"type": "string", "description": "Space-separated, as in the access token."},
        scopes={
            "type": "array",
            "items": _object(
                "One scope and what grants it: `baseline` or group ids.",
                scope=_STR,
                sources={"type": "array", "items": _STR},
            ),
        },
    ),
    "AuditEvent": _object(
        "Who did what to whom, when.",
        id=_INT,
        at=_TIME,
        actor_type={"type": "string", "enum": ["customer", "client", "system"]},
        actor_id=_NSTR,
        action=_STR,
        customer_id=_NSTR,
        target=_NSTR,
        details={"type": "object"},
    ),
    "SigningKey": _object(
        "A signing key: `signing` signs now, `published` is still in the JWKS for tokens it "
        "signed, `retired` is in neither.",
        kid=_STR,
        alg={"type": "string", "enum": ["RS256", "ES256", "EdDSA"]},
        created_at=_TIME,
        state={"type": "string", "enum": ["signing", "published", "retired"]},
    ),
}
