"""`token-service admin ...`: the everyday admin tasks from a shell, with the admin API's effect.

They call the same service functions as the admin API (`directory`, `lifecycle`), so a change
made here deny-lists live tokens and is audited the same way, with actor `system`/`cli:<user>`.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import select

from . import audit
from .extensions import db
from .inputs import email_key
from .models import Customer, LegalEntity
from .services import base, groups, legal_entities


def cli_actor() -> tuple[str, str]:
    """(actor_type, actor_id) of whoever runs the command: `system`, `cli:<user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return ("system", f"cli:{user}")


def record(action: str, **fields) -> None:
    """The audit event of a change made from the command line (every `token-service` command
    that changes something records its event this way, as the admin API does for its caller)."""
    kind, who = cli_actor()
    audit.record(action, actor_type=kind, actor_id=who, **fields)


@contextmanager
def refusals() -> Iterator[None]:
    """A change the directory refuses ends the command with its reason (exit status 1)."""
    try:
        yield
    except base.ServiceError as exc:
        raise click.ClickException(str(exc)) from None


def customer_id_of(email_or_id: str) -> str:
    """The id of the customer with this id or email (any case), or the command ends."""
    customer = (
        db.session.get(Customer, email_or_id)
        or db.session.scalars(
            select(Customer).where(Customer.email == email_key(email_or_id))
        ).first()
    )
    if customer is None:
        raise click.ClickException(f"no customer {email_or_id}")
    return customer.id


@click.group("admin")
def admin_group() -> None:
    """Legal entities, assignments and group scopes (as the admin API does them)."""


@admin_group.group("companies")
def companies_group() -> None:
    """Legal entities: companies and subsidiaries."""


@companies_group.command("create")
@click.argument("name")
@click.option("--id", "entity_id", default=None, help="Chosen id (default: generated).")
@click.option("--parent", default=None, help="Make it a subsidiary of this legal entity.")
@with_appcontext
def companies_create(name: str, entity_id: str | None, parent: str | None) -> None:
    """Create a company (or a subsidiary with --parent) with its predefined groups."""
    with refusals():
        entity = legal_entities.create_legal_entity(
            name, type="SUBSIDIARY" if parent else "COMPANY", parent_id=parent, id=entity_id
        )
    record("legal_entity.created", target=entity.id, type=entity.type, parent_id=entity.parent_id)
    db.session.commit()
    click.echo(f"legal entity {entity.id} {entity.type} {entity.name}")


@companies_group.command("list")
@click.option("--name", default=None, help="Name contains (any case).")
@with_appcontext
def companies_list(name: str | None) -> None:
    """List legal entities: id, type, parent, name."""
    query = select(LegalEntity).order_by(LegalEntity.name, LegalEntity.id)
    if name:
        query = query.where(LegalEntity.name.icontains(name, autoescape=True))
    for entity in db.session.scalars(query):
        click.echo(f"{entity.id}\t{entity.type}\t{entity.parent_id or '-'}\t{entity.name}")


@admin_group.group("customers")
def customers_group() -> None:
    """Customers' assignments to legal entities."""


@customers_group.command("assign")
@click.argument("customer")
@click.argument("legal_entity_id")
@click.option(
    "--type",
    "type_",
    type=click.Choice(["PRIMARY", "BILLING", "LOGISTICS", "CONTACT"]),
    default="CONTACT",
    show_default=True,
)
@with_appcontext
def customers_assign(customer: str, legal_entity_id: str, type_: str) -> None:
    """Assign CUSTOMER (email or id) to a legal entity; they join its CONTACT group."""
    customer_id = customer_id_of(customer)
    with refusals():
        legal_entities.assign(customer_id, legal_entity_id, type_)
    record("assignment.created", customer_id=customer_id, target=legal_entity_id, type=type_)
    db.session.commit()
    click.echo(f"assigned {customer_id} to {legal_entity_id} ({type_})")


@admin_group.group("groups")
def groups_group() -> None:
    """Customer groups."""


@groups_group.command("set-scopes")
@click.argument("group", required=False)
@click.argument("scopes", nargs=-1)
@click.option("--legal-entity", default=None, help="With --code: the entity's predefined group.")
@click.option("--code", type=click.Choice(["ADMIN", "BUYER", "REQUESTER", "CONTACT"]), default=None)
@with_appcontext
def groups_set_scopes(group, scopes, legal_entity, code) -> None:
    """Replace the scopes of GROUP (an id, or --legal-entity E --code C). Members' live access
    tokens where the group counts stop at once; their next refresh has the new scopes."""
    with refusals():
        if legal_entity or code:
            if not (legal_entity and code):
                raise click.UsageError("--legal-entity and --code go together")
            if group:
                scopes = (group, *scopes)  # no GROUP argument: the first word is a scope
            group = groups.group_of(legal_entity, code).id
        elif not group:
            raise click.UsageError("give a GROUP id, or --legal-entity and --code")
        names = sorted({name for word in scopes for name in word.split()})
        groups.set_group_scopes_now(group, names, actor=cli_actor())
    db.session.commit()
    click.echo(f"group {group}: {' '.join(names) or '(no scopes)'}")


def register(app: Flask) -> None:
    """Add `admin` to the app's command line (`token-service admin ...`)."""
    app.cli.add_command(admin_group)
