"""The scope catalogue: the scopes groups and clients may hold, each with its words."""

from __future__ import annotations

from sqlalchemy import or_, select

from ..extensions import db
from ..models import (
    Scope,
)
from ..scopes import split_scopes
from .base import ServiceError, settings

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
        raise ServiceError(
            f"unknown scopes: {' '.join(sorted(missing))}", status=422, field="scopes"
        )


def seed_catalogue() -> None:
    """The predefined scopes: the baseline and every template bundle, with their words. Run by
    `token-service migrate` (so `init`) and `demo`: on an existing deployment it adds the
    scopes new since (`offline_access`) and describes the predefined scopes that have no
    description yet, leaving every description an admin wrote as it is."""
    config = settings()
    names = set(split_scopes(config.baseline_scopes))
    for bundle in config.group_templates.values():
        names |= split_scopes(bundle)
    names |= {"token.introspect", "admin.read", "admin.manage", *OIDC_SCOPES}
    ensure_scopes(names, predefined=True)
    blank = select(Scope).where(
        Scope.predefined.is_(True), or_(Scope.description.is_(None), Scope.description == "")
    )
    for scope in db.session.scalars(blank):
        scope.description = describe_scope(scope.name)
    db.session.flush()


def _words(description) -> str:
    """A scope's description: what the consent page shows a customer, so never blank."""
    if not isinstance(description, str) or not description.strip():
        raise ServiceError(
            "a scope needs a description in plain words (the consent page shows it)",
            field="description",
        )
    return description.strip()


def add_scope(name: str, description: str) -> Scope:
    """Add a custom scope to the catalogue, with its description (422 without one); 409 if
    the name is taken."""
    description = _words(description)
    if db.session.get(Scope, name) is not None:
        raise ServiceError("scope exists", status=409, field="name")
    scope = Scope(name=name, description=description, predefined=False)
    db.session.add(scope)
    db.session.flush()
    return scope


def describe_catalogue_scope(name: str, description: str) -> Scope:
    """Set a scope's description (predefined ones too: seeding never overwrites it)."""
    scope = db.session.get(Scope, name)
    if scope is None:
        raise ServiceError("scope not found", status=404)
    scope.description = _words(description)
    db.session.flush()
    return scope
