"""Clients: registration, their metadata (RFC 7591 names) and the redirect-URI rules, secrets and
lifetimes."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..clients import forget_client, origin_of
from ..extensions import db
from ..inputs import InvalidEmail, normalize_email
from ..models import (
    Client,
)
from ..scopes import split_scopes
from ..security import hash_client_secret, new_token
from .base import ServiceError, unknown_changes
from .catalogue import check_catalogue

GRANT_TYPES = ("authorization_code", "password", "refresh_token", "client_credentials")


def check_redirect_uris(uris, field: str) -> list[str]:
    """Registered redirect URIs: absolute, no fragment (RFC 6749 §3.1.2), https or http on a
    loopback host (RFC 8252 §7.3); they are compared exactly, character for character."""
    checked = []
    for uri in uris:
        parts = urlsplit(uri) if isinstance(uri, str) else None
        if (
            parts is None
            or not parts.netloc
            or parts.fragment
            or "#" in uri
            or any(c.isspace() for c in uri)
            or len(uri) > 2000
        ):
            raise ServiceError(f"{field}: not an absolute URI without fragment", field=field)
        secure = parts.scheme == "https" or (
            parts.scheme == "http" and (parts.hostname or "") in ("localhost", "127.0.0.1", "::1")
        )
        if not secure:
            raise ServiceError(f"{field}: https, or http on localhost only", field=field)
        checked.append(uri)
    return list(dict.fromkeys(checked))


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def check_allowed_origins(origins, field: str = "allowed_origins") -> list[str]:
    """Origins a client's browser apps may call the API from (CORS): `scheme://host[:port]`,
    https or http on a loopback host as for redirect URIs; kept as a browser sends them in
    `Origin` (lower case, no default port, no trailing slash), each once."""
    checked = []
    for value in origins:
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
            origin = origin_of(value) if parts is not None else None
        except ValueError:  # e.g. an unclosed IPv6 bracket
            origin = None
        if (
            origin is None
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or "#" in value
            or "?" in value
            or "@" in parts.netloc
            or any(c.isspace() for c in value)
            or len(value) > 300
        ):
            raise ServiceError(f"{field}: not an origin (scheme://host[:port])", field=field)
        secure = origin.startswith("https://") or (parts.hostname or "") in _LOOPBACK
        if not secure:
            raise ServiceError(f"{field}: https, or http on localhost only", field=field)
        checked.append(origin)
    return list(dict.fromkeys(checked))


def check_web_uri(uri, field: str) -> str | None:
    """An RFC 7591 §2 web page or image of a client (`client_uri`, `logo_uri`, `policy_uri`,
    `tos_uri`): an absolute https URI, or http on a loopback host; None clears it."""
    if uri is None:
        return None
    try:
        parts = urlsplit(uri) if isinstance(uri, str) else None
        host = parts.hostname if parts is not None else None
    except ValueError:
        parts = host = None
    if parts is None or not host or any(c.isspace() for c in uri) or len(uri) > 2000:
        raise ServiceError(f"{field}: not an absolute URI", field=field)
    if not (parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK)):
        raise ServiceError(f"{field}: https, or http on localhost only", field=field)
    return uri


def check_contacts(contacts) -> list[str] | None:
    """RFC 7591 §2 `contacts`: e-mail addresses, each once; None or [] clears them."""
    if not contacts:
        return None
    checked = []
    for value in contacts:
        try:
            checked.append(normalize_email(value))
        except (InvalidEmail, TypeError, AttributeError):
            raise ServiceError("contacts: not an e-mail address", field="contacts") from None
    return list(dict.fromkeys(checked))


#: RFC 7591 §2 metadata kept as given (checked by `_apply_metadata`).
CLIENT_METADATA = (
    "client_uri",
    "logo_uri",
    "policy_uri",
    "tos_uri",
    "contacts",
    "backchannel_logout_uri",
    "backchannel_logout_session_required",
)


def _apply_metadata(client: Client, changes: dict) -> None:
    """Set the RFC 7591 / Back-Channel Logout metadata named in `changes` (None clears)."""
    for name in ("client_uri", "logo_uri", "policy_uri", "tos_uri"):
        if name in changes:
            setattr(client, name, check_web_uri(changes[name], name))
    if "contacts" in changes:
        client.contacts = check_contacts(changes["contacts"])
    if "backchannel_logout_uri" in changes:
        uri = changes["backchannel_logout_uri"]
        client.backchannel_logout_uri = (
            None if uri is None else check_redirect_uris([uri], "backchannel_logout_uri")[0]
        )
    if "backchannel_logout_session_required" in changes:
        client.backchannel_logout_session_required = bool(
            changes["backchannel_logout_session_required"]
        )


def _check_grants(grant_types: list[str], *, public: bool, redirect_uris) -> None:
    bad = set(grant_types) - set(GRANT_TYPES)
    if bad:
        raise ServiceError(f"unsupported grant types: {' '.join(sorted(bad))}", field="grant_types")
    if public and "client_credentials" in grant_types:
        raise ServiceError(
            "a public client (token_endpoint_auth_method none, confidential false) cannot use "
            "client_credentials",
            field="grant_types",
        )
    if "authorization_code" in grant_types and not redirect_uris:
        raise ServiceError("authorization_code needs redirect_uris", field="redirect_uris")


def create_client(
    client_id: str,
    *,
    name: str = "",
    confidential: bool,
    grant_types,
    scope: str,
    first_party: bool = False,
    audience: str | None = None,
    redirect_uris=(),
    post_logout_redirect_uris=(),
    allowed_origins=None,
    metadata: dict | None = None,
) -> tuple[Client, str | None]:
    """Register a client; returns it and its secret (shown once, stored only as a hash).
    `allowed_origins` None: the origins of its redirect URIs (CORS). `metadata`: the RFC 7591
    fields of CLIENT_METADATA."""
    grant_types = list(grant_types)
    if allowed_origins is not None:
        allowed_origins = check_allowed_origins(allowed_origins)
    redirect_uris = check_redirect_uris(redirect_uris, "redirect_uris")
    post_logout = check_redirect_uris(post_logout_redirect_uris, "post_logout_redirect_uris")
    _check_grants(grant_types, public=not confidential, redirect_uris=redirect_uris)
    check_catalogue(split_scopes(scope))
    if db.session.get(Client, client_id) is not None:
        raise ServiceError("client exists", status=409, field="client_id")
    secret = new_token() if confidential else None
    client = Client(
        client_id=client_id,
        name=name or client_id,
        secret_hash=hash_client_secret(secret) if secret else None,
        grant_types=" ".join(grant_types),
        scope=" ".join(sorted(split_scopes(scope))),
        first_party=first_party,
        audience=audience,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout,
        allowed_origins=allowed_origins,
    )
    _apply_metadata(client, metadata or {})
    db.session.add(client)
    db.session.flush()
    forget_client(client_id)
    return client, secret


def rotate_client_secret(client_id: str) -> str:
    """A new secret for a confidential client; the old one stops working at commit."""
    client = db.session.get(Client, client_id)
    if client is None:
        raise ServiceError("client not found", status=404)
    if client.is_public:
        raise ServiceError("a public client has no secret", status=409)
    secret = new_token()
    client.secret_hash = hash_client_secret(secret)
    client.version += 1
    forget_client(client_id)
    return secret


CLIENT_CHANGES = (
    "name",
    "scope",
    "grant_types",
    "audience",
    "first_party",
    "access_token_ttl",
    "refresh_token_ttl",
    "redirect_uris",
    "post_logout_redirect_uris",
    "allowed_origins",
    *CLIENT_METADATA,
)


def update_client(client_id: str, changes: dict, *, max_access_ttl: int, max_refresh_ttl: int):
    """Change a client's name, ceiling, grant types, audience, first-party flag or token
    lifetimes (None: the service default; bounded by the service maximums)."""
    unknown_changes(changes, CLIENT_CHANGES)
    client = db.session.get(Client, client_id)
    if client is None:
        raise ServiceError("client not found", status=404)
    if "redirect_uris" in changes:
        client.redirect_uris = check_redirect_uris(changes["redirect_uris"], "redirect_uris")
    if "post_logout_redirect_uris" in changes:
        client.post_logout_redirect_uris = check_redirect_uris(
            changes["post_logout_redirect_uris"], "post_logout_redirect_uris"
        )
    if "allowed_origins" in changes:  # None: back to the redirect URIs' origins
        origins = changes["allowed_origins"]
        client.allowed_origins = None if origins is None else check_allowed_origins(origins)
    grant_types = list(dict.fromkeys(changes.get("grant_types", client.grant_types.split())))
    _check_grants(grant_types, public=client.is_public, redirect_uris=client.redirect_uris)
    client.grant_types = " ".join(grant_types)
    if "scope" in changes:
        scopes = split_scopes(changes["scope"])
        check_catalogue(scopes)
        client.scope = " ".join(sorted(scopes))
    set_client_lifetimes(
        client, changes, max_access_ttl=max_access_ttl, max_refresh_ttl=max_refresh_ttl
    )
    if "name" in changes:
        client.name = changes["name"]
    if "audience" in changes:
        client.audience = changes["audience"]
    if "first_party" in changes:
        client.first_party = bool(changes["first_party"])
    _apply_metadata(client, changes)
    client.version += 1
    db.session.flush()
    forget_client(client_id)
    return client


def delete_client(client_id: str) -> None:
    """Delete a client; its sessions and refresh tokens go with it (revoke them first)."""
    client = db.session.get(Client, client_id)
    if client is None:
        raise ServiceError("client not found", status=404)
    db.session.delete(client)
    db.session.flush()
    forget_client(client_id)


def set_client_lifetimes(
    client: Client, changes: dict, *, max_access_ttl: int, max_refresh_ttl: int
) -> None:
    """Apply `access_token_ttl` / `refresh_token_ttl` from `changes` (None: the default)."""
    for name, maximum in (
        ("access_token_ttl", max_access_ttl),
        ("refresh_token_ttl", max_refresh_ttl),
    ):
        if name in changes:
            ttl = changes[name]
            if ttl is not None and not 1 <= ttl <= maximum:
                raise ServiceError(f"{name} must be from 1 to {maximum}", field=name)
            setattr(client, name, ttl)
