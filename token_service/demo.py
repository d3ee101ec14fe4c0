"""Demo data that tells the seeds' story (shared orders and customer groups).

ACME Corp (with subsidiary ACME Logistics) and Globex. alice@acme.test is in ACME's ADMIN group,
so she holds `order.order_read_le` there, and a plain CONTACT of Globex; bob@acme.test is in
ACME's BUYER group. Loading twice changes nothing: a confidential client's secret is set (and
returned) when the client is created, never again (`token-service clients rotate-secret` does).
"""

from __future__ import annotations

from sqlalchemy import select

from .extensions import db
from .models import Assignment, Client, Customer, GroupMember, LegalEntity
from .services.base import ServiceError
from .services.catalogue import seed_catalogue
from .services.clients import check_redirect_uris, create_client, rotate_client_secret
from .services.customers import create_customer
from .services.groups import add_member, group_of
from .services.legal_entities import assign, create_legal_entity

DEMO_PASSWORD = "correct horse battery staple"  # documented in README; demo only

ENTITIES = [
    ("acme", "ACME Corp", "COMPANY", None),
    ("acme-logistics", "ACME Logistics", "SUBSIDIARY", "acme"),
    ("globex", "Globex", "COMPANY", None),
]
# (id, email, [(entity, assignment type, extra group)], default entity). Fixed ids, so that
# the reference order service's sample orders (examples/order_service) name their buyers.
CUSTOMERS = [
    (
        "cus_alice",
        "alice@acme.test",
        [("acme", "PRIMARY", "ADMIN"), ("globex", "CONTACT", None)],
        "acme",
    ),
    ("cus_bob", "bob@acme.test", [("acme", "PRIMARY", "BUYER")], "acme"),
]


# The demo's confidential clients (client_credentials): (client_id, name, scope).
SERVICES = [
    ("order-service", "Order service", "token.introspect"),
    ("admin-cli", "Admin CLI", "admin.read admin.manage"),
]


def _storefront_scopes() -> str:
    from flask import current_app

    from .scopes import split_scopes

    settings = current_app.config["SETTINGS"]
    names = set(split_scopes(settings.baseline_scopes))
    for bundle in settings.group_templates.values():
        names |= split_scopes(bundle)
    return " ".join(sorted(names))


def _issuer() -> str:
    from flask import current_app

    return current_app.config["SETTINGS"].issuer


def _service(client_id: str, name: str, scope: str) -> dict:
    """A confidential client that gets tokens for itself (client_credentials)."""
    return dict(
        client_id=client_id,
        name=name,
        confidential=True,
        grant_types=["client_credentials"],
        scope=scope,
    )


def load_demo() -> dict[str, str]:
    """Create what is missing; returns {client_id: secret} for the confidential demo clients
    created now. An existing client keeps its secret: secrets printed earlier stay valid."""
    seed_catalogue()
    for entity_id, name, type_, parent in ENTITIES:
        if db.session.get(LegalEntity, entity_id) is None:
            create_legal_entity(name, type=type_, parent_id=parent, id=entity_id)
    for customer_id, email, assignments, default in CUSTOMERS:
        customer = db.session.scalars(select(Customer).where(Customer.email == email)).first()
        if customer is None:
            customer = create_customer(
                email, DEMO_PASSWORD, id=customer_id, default_legal_entity_id=default
            )
        for entity_id, type_, group_code in assignments:
            if db.session.get(Assignment, (customer.id, entity_id)) is None:
                assign(customer.id, entity_id, type_)
            if group_code:
                group = group_of(entity_id, group_code)
                if db.session.get(GroupMember, (group.id, customer.id)) is None:
                    add_member(group.id, customer.id)
    clients = [
        dict(
            client_id="storefront",
            name="Storefront",
            confidential=False,
            grant_types=["password", "refresh_token"],
            scope=_storefront_scopes(),
            first_party=True,
        ),
        dict(
            client_id="demo-web",
            name="Demo storefront",
            confidential=False,
            grant_types=["authorization_code", "refresh_token"],
            scope=_storefront_scopes() + " email openid profile",
            first_party=True,
            redirect_uris=[f"{_issuer()}/demo"],
            post_logout_redirect_uris=[f"{_issuer()}/demo"],
        ),
        *(_service(*service) for service in SERVICES),
    ]
    secrets = {}
    try:
        check_redirect_uris([f"{_issuer()}/demo"], "redirect_uris")
    except ServiceError:
        # Plain http on a public host: no browser client may be sent there (the demo page
        # works on http://127.0.0.1 and on https).
        clients = [c for c in clients if c["client_id"] != "demo-web"]
    for spec in clients:
        existing = db.session.get(Client, spec["client_id"])
        if existing is None:
            _, secret = create_client(**spec)
            if secret:
                secrets[spec["client_id"]] = secret
        elif spec.get("redirect_uris") and existing.redirect_uris != spec["redirect_uris"]:
            # The issuer (and so the demo page's address) changed since the last load.
            existing.redirect_uris = spec["redirect_uris"]
            existing.post_logout_redirect_uris = spec["post_logout_redirect_uris"]
    return secrets


def demo_secrets() -> dict[str, str]:
    """`load_demo`, and a secret for every confidential demo client, rotating those that
    existed already: for benchmarks and scripts that need all of them, never for `make run`."""
    secrets = load_demo()
    for client_id, *_ in SERVICES:
        if client_id not in secrets:
            secrets[client_id] = rotate_client_secret(client_id)
    return secrets
