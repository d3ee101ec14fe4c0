"""The directory: legal entities, customers, assignments, groups, the scope catalogue and clients.

Service functions used by the CLI, the demo data and the admin API. They add to the current
transaction and never commit: the caller decides where the transaction ends.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import or_, select

from .clients import forget_client, origin_of
from .extensions import db
from .inputs import InvalidEmail, normalize_email
from .models import (
    ASSIGNMENT_TYPES,
    PREDEFINED_GROUPS,
    Assignment,
    Client,
    Customer,
    CustomerGroup,
    GroupMember,
    GroupScope,
    LegalEntity,
    Scope,
    new_id,
)
from .scopes import split_scopes
from .security import hash_client_secret, hash_password, new_token

GRANT_TYPES = ("authorization_code", "password", "refresh_token", "client_credentials")
#: What the OpenID Connect scopes need in the catalogue (a client's ceiling names them).
#: `offline_access` (OpenID Connect Core §11): a third-party client gets a refresh token only
#: when the customer consented to it (oauth2/grants.py).
OIDC_SCOPES = ("openid", "email", "profile", "offline_access")
#: The predefined scopes in a person's words: what the consent page says a client asks for.
#: `seed_catalogue` writes them where a catalogue row has no description (never over an
#: admin's own); a scope the configured templates add beyond these gets `describe_scope`'s.
SCOPE_DESCRIPTIONS = {
    "openid": "Know who you are (your account's identifier)",
    "email": "See your email address",
    "profile": "See your name",
    "offline_access": "Stay signed in: keep access when you are away",
    "customer.customerprofile_view": "See your profile",
    "customer.customerprofile_edit": "Change your profile",
    "order.history_view": "See your order history",
    "order.order_create": "Place orders for your company",
    "order.order_read_le": "See all orders of your company",
    "quote.quote_read_own": "See your quotes",
    "quote.quote_manage_own": "Ask for quotes and change your own",
    "customermanagement.legalentity_read_own": "See which companies you belong to",
    "approval.approval_read_own": "See your approval requests",
    "approval.approval_manage_own": "Make and change your own approval requests",
    "approval.approval_read": "See all approval requests of your company",
    "approval.approval_manage": "Approve or reject your company's approval requests",
    "customer.customer_read_own": "See your company's members, groups and activity",
    "customer.customer_manage_own": "Invite people to your company",
    "iam.assignment_create_own": "Add your company's members to its groups",
    "iam.assignment_delete_own": "Remove people from your company and its groups",
    "token.introspect": "Check whether tokens are still valid (for services)",
    "admin.read": "Read everything the admin API shows (for admin tools)",
    "admin.manage": "Change companies, customers, groups and clients (for admin tools)",
}


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
            raise DirectoryError(f"{field}: not an absolute URI without fragment", field=field)
        secure = parts.scheme == "https" or (
            parts.scheme == "http" and (parts.hostname or "") in ("localhost", "127.0.0.1", "::1")
        )
        if not secure:
            raise DirectoryError(f"{field}: https, or http on localhost only", field=field)
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
            raise DirectoryError(f"{field}: not an origin (scheme://host[:port])", field=field)
        secure = origin.startswith("https://") or (parts.hostname or "") in _LOOPBACK
        if not secure:
            raise DirectoryError(f"{field}: https, or http on localhost only", field=field)
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
        raise DirectoryError(f"{field}: not an absolute URI", field=field)
    if not (parts.scheme == "https" or (parts.scheme == "http" and host in _LOOPBACK)):
        raise DirectoryError(f"{field}: https, or http on localhost only", field=field)
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
            raise DirectoryError("contacts: not an e-mail address", field="contacts") from None
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
        raise DirectoryError(
            f"unsupported grant types: {' '.join(sorted(bad))}", field="grant_types"
        )
    if public and "client_credentials" in grant_types:
        raise DirectoryError(
            "a public client (token_endpoint_auth_method none, confidential false) cannot use "
            "client_credentials",
            field="grant_types",
        )
    if "authorization_code" in grant_types and not redirect_uris:
        raise DirectoryError("authorization_code needs redirect_uris", field="redirect_uris")


class DirectoryError(ValueError):
    """A request the directory refuses; `status` says how (404 missing, 409 conflict, 422)."""

    def __init__(self, message: str, status: int = 422, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def _settings():
    return current_app.config["SETTINGS"]


def describe_scope(name: str) -> str:
    """A scope in words: the predefined ones' own, else made from the name
    (`invoice.invoice_read`: "Invoice: invoice read"), so that no scope is ever shown raw."""
    known = SCOPE_DESCRIPTIONS.get(name)
    if known is not None:
        return known
    service, _, action = name.partition(".")
    words = (action or service).replace("_", " ").strip()
    return f"{service.capitalize()}: {words}" if action else words.capitalize() or name


def ensure_scopes(names, *, predefined: bool = False, description: str = "") -> None:
    """Add scopes to the catalogue if absent (templates and client ceilings use this), each
    with a description: `description`, else its words (`describe_scope`)."""
    names = set(names)
    known = set(db.session.scalars(select(Scope.name).where(Scope.name.in_(names))))
    for name in sorted(names - known):
        words = description or describe_scope(name)
        db.session.add(Scope(name=name, predefined=predefined, description=words))
    db.session.flush()


def check_catalogue(names) -> None:
    """A group or client may only hold scopes of the catalogue."""
    names = set(names)
    known = set(db.session.scalars(select(Scope.name).where(Scope.name.in_(names))))
    missing = names - known
    if missing:
        raise DirectoryError(
            f"unknown scopes: {' '.join(sorted(missing))}", status=422, field="scopes"
        )


def seed_catalogue() -> None:
    """The predefined scopes: the baseline and every template bundle, with their words. Run by
    `token-service migrate` (so `init`) and `demo`: on an existing deployment it adds the
    scopes new since (`offline_access`) and describes the predefined scopes that have no
    description yet, leaving every description an admin wrote as it is."""
    settings = _settings()
    names = set(split_scopes(settings.baseline_scopes))
    for bundle in settings.group_templates.values():
        names |= split_scopes(bundle)
    names |= {"token.introspect", "admin.read", "admin.manage", *OIDC_SCOPES}
    ensure_scopes(names, predefined=True)
    blank = select(Scope).where(
        Scope.predefined.is_(True), or_(Scope.description.is_(None), Scope.description == "")
    )
    for scope in db.session.scalars(blank):
        scope.description = describe_scope(scope.name)
    db.session.flush()


def _would_cycle(entity_id: str, parent_id: str) -> bool:
    seen = set()
    current = parent_id
    while current is not None:
        if current == entity_id or current in seen:
            return True
        seen.add(current)
        current = db.session.scalar(select(LegalEntity.parent_id).where(LegalEntity.id == current))
    return False


def create_legal_entity(
    name: str,
    *,
    type: str = "COMPANY",
    parent_id: str | None = None,
    id: str | None = None,
    account_limit: dict | None = None,
) -> LegalEntity:
    """A company or subsidiary, with its predefined ADMIN, BUYER, REQUESTER and CONTACT groups."""
    if type not in ("COMPANY", "SUBSIDIARY"):
        raise DirectoryError("type must be COMPANY or SUBSIDIARY", field="type")
    if type == "SUBSIDIARY":
        if not parent_id:
            raise DirectoryError("a subsidiary needs parent_id", field="parent_id")
        if db.session.get(LegalEntity, parent_id) is None:
            raise DirectoryError("parent legal entity not found", field="parent_id")
    elif parent_id:
        raise DirectoryError("a company has no parent", field="parent_id")
    entity_id = id or new_id("le")
    if db.session.get(LegalEntity, entity_id) is not None:
        raise DirectoryError("legal entity exists", status=409, field="id")
    entity = LegalEntity(id=entity_id, name=name, type=type, parent_id=parent_id)
    if account_limit:
        entity.account_limit_currency = account_limit.get("currency")
        entity.account_limit_value = account_limit.get("value")
    db.session.add(entity)
    db.session.flush()
    templates = _settings().group_templates
    for code in PREDEFINED_GROUPS:
        scopes = split_scopes(templates.get(code, ""))
        ensure_scopes(scopes, predefined=True)
        group = CustomerGroup(
            id=new_id("grp"),
            name=code.capitalize(),
            legal_entity_id=entity_id,
            code=code,
            predefined=True,
        )
        db.session.add(group)
        db.session.flush()
        db.session.add_all(GroupScope(group_id=group.id, scope=s) for s in sorted(scopes))
    db.session.flush()
    return entity


def valid_email(email: str) -> str:
    """An address in its one stored form (inputs.normalize_email), or a 400 saying why not."""
    try:
        return normalize_email(email)
    except InvalidEmail as exc:
        raise DirectoryError(str(exc), field="email") from None


def create_customer(
    email: str,
    password: str | None,
    *,
    id: str | None = None,
    default_legal_entity_id: str | None = None,
) -> Customer:
    email = valid_email(email)
    if db.session.scalar(select(Customer.id).where(Customer.email == email)):
        raise DirectoryError("a customer with this email exists", status=409, field="email")
    customer = Customer(
        id=id or new_id("cus"),
        email=email,
        password_hash=hash_password(password) if password else None,
        status="active",
        default_legal_entity_id=default_legal_entity_id,
    )
    db.session.add(customer)
    db.session.flush()
    return customer


def group_of(legal_entity_id: str, code: str) -> CustomerGroup:
    group = db.session.scalars(
        select(CustomerGroup).where(
            CustomerGroup.legal_entity_id == legal_entity_id,
            CustomerGroup.code == code,
            CustomerGroup.predefined.is_(True),
        )
    ).first()
    if group is None:
        raise DirectoryError(f"{code} group of {legal_entity_id} not found", status=404)
    return group


def assign(customer_id: str, legal_entity_id: str, type: str = "CONTACT") -> Assignment:
    """Assign a customer to a legal entity and add them to its CONTACT group."""
    if type not in ASSIGNMENT_TYPES:
        raise DirectoryError(f"type must be one of {', '.join(ASSIGNMENT_TYPES)}", field="type")
    if db.session.get(LegalEntity, legal_entity_id) is None:
        raise DirectoryError("legal entity not found", status=404, field="legal_entity_id")
    if db.session.get(Customer, customer_id) is None:
        raise DirectoryError("customer not found", status=404, field="customer_id")
    if db.session.get(Assignment, (customer_id, legal_entity_id)) is not None:
        raise DirectoryError("already assigned", status=409)
    assignment = Assignment(customer_id=customer_id, legal_entity_id=legal_entity_id, type=type)
    db.session.add(assignment)
    db.session.flush()
    add_member(group_of(legal_entity_id, "CONTACT").id, customer_id)
    return assignment


def add_member(group_id: str, customer_id: str) -> GroupMember:
    """Add a customer to a group; an entity's group needs the customer assigned to it."""
    group = db.session.get(CustomerGroup, group_id)
    if group is None:
        raise DirectoryError("group not found", status=404)
    if (
        group.legal_entity_id is not None
        and db.session.get(Assignment, (customer_id, group.legal_entity_id)) is None
    ):
        raise DirectoryError("the customer is not assigned to the group's legal entity", status=409)
    if db.session.get(GroupMember, (group_id, customer_id)) is not None:
        raise DirectoryError("already a member", status=409)
    member = GroupMember(
        group_id=group_id, customer_id=customer_id, legal_entity_id=group.legal_entity_id
    )
    db.session.add(member)
    db.session.flush()
    return member


def create_group(
    name: str, scopes, *, legal_entity_id: str | None = None, code: str = "CUSTOM"
) -> CustomerGroup:
    """A custom group in an entity, or tenant-wide when `legal_entity_id` is None."""
    scopes = set(scopes)
    check_catalogue(scopes)
    if legal_entity_id is not None and db.session.get(LegalEntity, legal_entity_id) is None:
        raise DirectoryError("legal entity not found", status=404, field="legal_entity_id")
    group = CustomerGroup(
        id=new_id("grp"), name=name, legal_entity_id=legal_entity_id, code=code, predefined=False
    )
    db.session.add(group)
    db.session.flush()
    db.session.add_all(GroupScope(group_id=group.id, scope=s) for s in sorted(scopes))
    db.session.flush()
    return group


def set_group_scopes(group_id: str, scopes) -> None:
    """Replace a group's scopes; takes effect at the next refresh of its members."""
    scopes = set(scopes)
    check_catalogue(scopes)
    current = set(
        db.session.scalars(select(GroupScope.scope).where(GroupScope.group_id == group_id))
    )
    for name in current - scopes:
        db.session.delete(db.session.get(GroupScope, (group_id, name)))
    db.session.add_all(GroupScope(group_id=group_id, scope=s) for s in sorted(scopes - current))
    db.session.flush()


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
        raise DirectoryError("client exists", status=409, field="client_id")
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
        raise DirectoryError("client not found", status=404)
    if client.is_public:
        raise DirectoryError("a public client has no secret", status=409)
    secret = new_token()
    client.secret_hash = hash_client_secret(secret)
    client.version += 1
    forget_client(client_id)
    return secret


# -- changes and removals (admin API) ---------------------------------------------------------

ENTITY_CHANGES = ("name", "parent_id", "account_limit")
CUSTOMER_CHANGES = ("email", "password", "default_legal_entity_id")
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


def _unknown_changes(changes: dict, allowed) -> None:
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ValueError(f"unknown changes: {sorted(unknown)}")


def update_legal_entity(legal_entity_id: str, changes: dict) -> LegalEntity:
    """Rename, set or clear the account limit, move a subsidiary (never into a cycle)."""
    _unknown_changes(changes, ENTITY_CHANGES)
    entity = db.session.get(LegalEntity, legal_entity_id)
    if entity is None:
        raise DirectoryError("legal entity not found", status=404)
    if "parent_id" in changes and changes["parent_id"] != entity.parent_id:
        parent_id = changes["parent_id"]
        if entity.type == "COMPANY":
            raise DirectoryError("a company has no parent", field="parent_id")
        if not parent_id:
            raise DirectoryError("a subsidiary needs parent_id", field="parent_id")
        if db.session.get(LegalEntity, parent_id) is None:
            raise DirectoryError("parent legal entity not found", field="parent_id")
        if _would_cycle(entity.id, parent_id):
            raise DirectoryError("the parent would make a cycle", status=409, field="parent_id")
        entity.parent_id = parent_id
    if "name" in changes:
        entity.name = changes["name"]
    if "account_limit" in changes:
        limit = changes["account_limit"] or {}
        entity.account_limit_currency = limit.get("currency")
        entity.account_limit_value = limit.get("value")
    entity.version += 1
    db.session.flush()
    return entity


def update_customer(customer_id: str, changes: dict) -> Customer:
    """Change email (unique, case-insensitive), password (None: no password login) or the
    default legal entity (one the customer is assigned to, or None)."""
    _unknown_changes(changes, CUSTOMER_CHANGES)
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise DirectoryError("customer not found", status=404)
    if "email" in changes:
        email = valid_email(changes["email"])
        taken = db.session.scalar(
            select(Customer.id).where(Customer.email == email, Customer.id != customer_id)
        )
        if taken:
            raise DirectoryError("a customer with this email exists", status=409, field="email")
        customer.email = email
    if "password" in changes:
        password = changes["password"]
        customer.password_hash = hash_password(password) if password else None
    if "default_legal_entity_id" in changes:
        entity_id = changes["default_legal_entity_id"]
        if entity_id is not None and db.session.get(Assignment, (customer_id, entity_id)) is None:
            raise DirectoryError(
                "the customer is not assigned to that legal entity",
                status=409,
                field="default_legal_entity_id",
            )
        customer.default_legal_entity_id = entity_id
    customer.version += 1
    db.session.flush()
    return customer


def set_assignment_type(customer_id: str, legal_entity_id: str, type: str) -> Assignment:
    """Change what a customer is to an entity (PRIMARY, BILLING, LOGISTICS, CONTACT)."""
    if type not in ASSIGNMENT_TYPES:
        raise DirectoryError(f"type must be one of {', '.join(ASSIGNMENT_TYPES)}", field="type")
    assignment = db.session.get(Assignment, (customer_id, legal_entity_id))
    if assignment is None:
        raise DirectoryError("not assigned", status=404)
    assignment.type = type
    db.session.flush()
    return assignment


def delete_group(group_id: str) -> None:
    """Delete a custom group that has no members left; predefined groups stay (409)."""
    group = db.session.get(CustomerGroup, group_id)
    if group is None:
        raise DirectoryError("group not found", status=404)
    if group.predefined:
        raise DirectoryError("predefined groups cannot be deleted", status=409)
    if db.session.scalar(select(GroupMember.customer_id).where(GroupMember.group_id == group_id)):
        raise DirectoryError("the group still has members", status=409)
    db.session.delete(group)  # its scopes go with it (foreign key cascade)
    db.session.flush()


def _words(description) -> str:
    """A scope's description: what the consent page shows a customer, so never blank."""
    if not isinstance(description, str) or not description.strip():
        raise DirectoryError(
            "a scope needs a description in plain words (the consent page shows it)",
            field="description",
        )
    return description.strip()


def add_scope(name: str, description: str) -> Scope:
    """Add a custom scope to the catalogue, with its description (422 without one); 409 if
    the name is taken."""
    description = _words(description)
    if db.session.get(Scope, name) is not None:
        raise DirectoryError("scope exists", status=409, field="name")
    scope = Scope(name=name, description=description, predefined=False)
    db.session.add(scope)
    db.session.flush()
    return scope


def describe_catalogue_scope(name: str, description: str) -> Scope:
    """Set a scope's description (predefined ones too: seeding never overwrites it)."""
    scope = db.session.get(Scope, name)
    if scope is None:
        raise DirectoryError("scope not found", status=404)
    scope.description = _words(description)
    db.session.flush()
    return scope


def update_client(client_id: str, changes: dict, *, max_access_ttl: int, max_refresh_ttl: int):
    """Change a client's name, ceiling, grant types, audience, first-party flag or token
    lifetimes (None: the service default; bounded by the service maximums)."""
    _unknown_changes(changes, CLIENT_CHANGES)
    client = db.session.get(Client, client_id)
    if client is None:
        raise DirectoryError("client not found", status=404)
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
        raise DirectoryError("client not found", status=404)
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
                raise DirectoryError(f"{name} must be from 1 to {maximum}", field=name)
            setattr(client, name, ttl)
