"""The `token-service` command: database, demo data, keys, customers, clients, serving."""

from __future__ import annotations

import os
import sys

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from .extensions import db
from .notifications import deliver_pending
from .services import customers


def _settings():
    return current_app.config["SETTINGS"]


def _me() -> str:
    """This command as the user typed it, for the commands its output suggests: after `make
    run` that is `.venv/bin/token-service` (not on PATH), else `token-service`."""
    typed = sys.argv[0] if sys.argv else ""
    if os.path.basename(typed) != "token-service" or os.sep not in typed:
        return "token-service"
    relative = os.path.relpath(typed)
    return typed if relative.startswith("..") else relative


@click.command("migrate")
@with_appcontext
def migrate_command() -> None:
    """Create or upgrade the database schema (Alembic) and seed the scope catalogue."""
    from .database import upgrade
    from .services.catalogue import seed_catalogue

    upgrade(db.engine)
    seed_catalogue()
    db.session.commit()
    click.echo(f"database ready: {db.engine.url.render_as_string(hide_password=True)}")


@click.command("demo")
@click.option("--print-secrets/--no-print-secrets", default=True)
@with_appcontext
def demo_command(print_secrets: bool) -> None:
    """Load the demo companies, customers and clients (idempotent). The secrets of the demo's
    confidential clients are printed when they are created; a client that exists keeps its
    secret (`clients rotate-secret ID` sets and prints a new one)."""
    from .demo import SERVICES, load_demo

    secrets = load_demo()
    db.session.commit()
    if print_secrets:
        for client_id, *_ in SERVICES:
            if client_id in secrets:
                click.echo(f"client {client_id} secret: {secrets[client_id]}")
            else:
                click.echo(
                    f"client {client_id} exists: its secret is unchanged "
                    f"(`{_me()} clients rotate-secret {client_id}` sets and prints a new one)"
                )
        issuer = _settings().issuer
        click.echo(
            f"""
Sign in through the hosted pages (authorization code + PKCE, OpenID Connect) in a browser:
  {issuer}/demo
Or log in as alice with the password grant (storefront is a public, first-party client):
  curl -s {issuer}/oauth/token -d grant_type=password -d client_id=storefront \\
       -d username=alice@acme.test -d 'password=correct horse battery staple'
Switch her to Globex with the refresh_token from that answer (no new login):
  curl -s {issuer}/oauth/token -d grant_type=refresh_token -d client_id=storefront \\
       -d refresh_token=REFRESH_TOKEN -d legal_entity_id=globex
Signing keys: {issuer}/jwks.json   Discovery: {issuer}/.well-known/openid-configuration
"""
        )


@click.group("keys")
def keys_group() -> None:
    """Signing keys in TOKEN_SERVICE_KEYS_DIR."""


@keys_group.command("generate")
@click.option("--alg", type=click.Choice(["RS256", "ES256", "EdDSA"]), default=None)
@click.option("--if-absent", is_flag=True, help="Do nothing if a key exists.")
@with_appcontext
def keys_generate(alg: str | None, if_absent: bool) -> None:
    """Create a signing key; it signs from now on (the previous one stays published)."""
    keyring = current_app.extensions["keyring"]
    if if_absent and keyring.all_keys():
        click.echo(f"signing key present: {keyring.current.kid} ({keyring.current.alg})")
        return
    key = keyring.generate(alg or _settings().signing_alg)
    click.echo(f"generated {key.alg} key {key.kid} at {key.path}")


@keys_group.command("list")
@with_appcontext
def keys_list() -> None:
    """List keys, newest (signing) first, and whether each is still published."""
    import json

    keyring = current_app.extensions["keyring"]
    published = {k["kid"] for k in json.loads(keyring.jwks_json())["keys"]}
    for i, key in enumerate(keyring.all_keys()):
        state = "signing" if i == 0 else ("published" if key.kid in published else "retired")
        click.echo(f"{key.kid}  {key.alg:6}  {key.created_at:%Y-%m-%dT%H:%M:%SZ}  {state}")


@keys_group.command("prune")
@with_appcontext
def keys_prune() -> None:
    """Delete keys no longer published (every token they signed has expired)."""
    for path in current_app.extensions["keyring"].prune():
        click.echo(f"deleted {path}")


@keys_group.command("rotate")
@with_appcontext
def keys_rotate() -> None:
    """A new key (TOKEN_SERVICE_SIGNING_ALG) signs from now on; the previous one stays
    published until every token it signed has expired. Audited, like the admin API's."""
    from . import audit

    keyring = current_app.extensions["keyring"]
    previous = keyring.all_keys()
    key = keyring.generate(_settings().signing_alg)
    audit.record(
        "signing_key.rotated",
        actor_type="system",
        actor_id="cli",
        target=key.kid,
        alg=key.alg,
        previous=previous[0].kid if previous else None,
    )
    db.session.commit()
    was = f" (was {previous[0].kid})" if previous else ""
    click.echo(f"signing with {key.alg} key {key.kid}{was}")


@click.group("customers")
def customers_group() -> None:
    """Customers."""


def _at_terminal() -> bool:
    return sys.stdin.isatty()


def _password(password: str | None, password_stdin: bool) -> str | None:
    """The password given (the first line of standard input with --password-stdin), else one
    typed twice at a terminal; None without a terminal. Held to the admin API's rule."""
    from .services.company import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

    if password is not None and password_stdin:
        raise click.UsageError("--password and --password-stdin exclude each other")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: standard input holds no password")
    elif password is None and _at_terminal():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if password is not None and not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise click.UsageError(
            f"the password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    return password


def _invite(customer, entity_id: str) -> None:
    """Invite the new, `invited` customer to `entity_id` as a company's invitation of a new
    address does (company.invite), the operator inviting: an invitation whose activation link
    goes out through the outbox. Nothing is assigned before the customer activates (then
    company._join assigns them and records `assignment.created`)."""
    from datetime import timedelta

    from .admin_cli import record
    from .models import Invitation, LegalEntity, new_id, utcnow
    from .services.base import ServiceError
    from .services.company import (
        _send_link,  # the link's token and its email, as for any invitation
    )

    entity = db.session.get(LegalEntity, entity_id)
    if entity is None:
        raise ServiceError(f"legal entity {entity_id} not found", status=404)
    now = utcnow()
    invitation = Invitation(
        id=new_id("inv"),
        legal_entity_id=entity.id,
        email=customer.email,
        customer_id=customer.id,
        created_at=now,
        expires_at=now + timedelta(seconds=_settings().invitation_ttl),
    )
    db.session.add(invitation)
    _send_link(invitation, customer, entity)
    db.session.flush()
    record("invitation.created", target=invitation.id, legal_entity_id=entity.id)


@customers_group.command("create")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--password", default=None, help="The password (others may see it: prefer stdin).")
@click.option("--legal-entity", "legal_entities", multiple=True, help="Assign (repeatable).")
@with_appcontext
def customers_create(
    email: str, password_stdin: bool, password: str | None, legal_entities: tuple[str, ...]
) -> None:
    """Create a customer. With a password (typed at a terminal, or --password-stdin) they are
    active and assigned to each --legal-entity (its CONTACT group) at once. Without a password
    and without a terminal they are `invited` to each --legal-entity: the activation link (in
    the outbox) lets them set their password and join; with no --legal-entity, created without
    a password (`customers set-password` sets one)."""
    from .admin_cli import record, refusals
    from .notifications import deliver_pending
    from .services.customers import create_customer
    from .services.legal_entities import assign

    password = _password(password, password_stdin)
    invited = password is None and bool(legal_entities)
    with refusals():
        customer = create_customer(email, password)
        record("customer.created", customer_id=customer.id, default_legal_entity_id=None)
        if invited:
            customer.status = "invited"
            record("customer.invited", customer_id=customer.id, target=legal_entities[0])
        for entity in legal_entities:
            if invited:
                _invite(customer, entity)
            else:
                assign(customer.id, entity)
                record("assignment.created", customer_id=customer.id, target=entity, type="CONTACT")
    db.session.commit()
    click.echo(f"customer {customer.id} {customer.email} {customer.status}")
    me = _me()
    if invited and _settings().smtp_url is None:
        click.echo(
            "the activation link waits in the outbox: `TOKEN_SERVICE_SMTP_URL=smtp://HOST "
            f"{me} notifications send` sends it (TOKEN_SERVICE_SMTP_URL=console prints it)"
        )
    elif invited and deliver_pending():  # after the commit: a mail never announces a rollback
        click.echo(f"activation link sent to {customer.email}")
    elif invited:
        click.echo(f"the activation link is not sent yet: `{me} notifications send` retries")
    elif password is None:
        click.echo(
            f"no password: {customer.email} cannot sign in until one is set "
            f"(`{me} customers set-password {customer.email} --password-stdin`), "
            "or invite them with --legal-entity"
        )


@customers_group.command("set-password")
@click.argument("customer")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@with_appcontext
def customers_set_password(customer: str, password_stdin: bool) -> None:
    """Set the password of CUSTOMER (email or id), as the admin API's PATCH does: they are
    signed out everywhere. An invited customer sets theirs with their activation link."""
    from .admin_cli import cli_actor, customer_id_of, record, refusals
    from .models import Customer

    customer_id = customer_id_of(customer)
    if db.session.get(Customer, customer_id).status == "invited":
        raise click.ClickException(
            f"{customer} is invited: they set their password with their activation link"
        )
    password = _password(None, password_stdin)
    if password is None:
        raise click.UsageError("no terminal to type the password at: use --password-stdin")
    with refusals():
        customers.update_customer(customer_id, {"password": password}, actor=cli_actor())
    record("customer.updated", customer_id=customer_id, changed=["password"])
    db.session.commit()
    click.echo(f"customer {customer_id}: password set")


@click.group("clients")
def clients_group() -> None:
    """OAuth clients."""


@clients_group.command("create")
@click.argument("client_id")
@click.option("--public", is_flag=True, help="No secret (browser or mobile app).")
@click.option("--first-party", is_flag=True, help="May use the password grant; skips consent.")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    required=True,
    type=click.Choice(["authorization_code", "password", "refresh_token", "client_credentials"]),
)
@click.option("--scope", default="", help="Scope ceiling, space-separated.")
@click.option("--audience", default=None)
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Exact URI (repeatable).")
@click.option(
    "--post-logout-redirect-uri", "post_logout", multiple=True, help="Exact URI (repeatable)."
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="CORS origin scheme://host[:port] of its browser apps (repeatable; default: the "
    "redirect URIs' origins).",
)
@with_appcontext
def clients_create(
    client_id,
    public,
    first_party,
    grants,
    scope,
    audience,
    redirect_uris,
    post_logout,
    allowed_origins,
) -> None:
    """Register a client; a confidential client's secret is printed once."""
    from .services.base import ServiceError
    from .services.clients import create_client

    try:
        client, secret = create_client(
            client_id,
            confidential=not public,
            grant_types=grants,
            scope=scope,
            first_party=first_party,
            audience=audience,
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout,
            allowed_origins=allowed_origins or None,
        )
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"client {client.client_id}" + (f" secret: {secret}" if secret else " (public)"))


@clients_group.command("rotate-secret")
@click.argument("client_id")
@with_appcontext
def clients_rotate_secret(client_id: str) -> None:
    """Set a new secret for a confidential client and print it, once: the old one stops
    working now (as the admin API's rotate-secret, and audited the same way)."""
    from .admin_cli import record, refusals
    from .services.clients import rotate_client_secret

    with refusals():
        secret = rotate_client_secret(client_id)
    record("client.secret_rotated", target=client_id)
    db.session.commit()
    click.echo(f"client {client_id} secret: {secret}")


@clients_group.command("initial-access-token")
@click.option(
    "--expires-in", default=86400, show_default=True, type=click.IntRange(1), help="Seconds."
)
@click.option("--uses", default=1, show_default=True, type=click.IntRange(1), help="Registrations.")
@with_appcontext
def clients_initial_access_token(expires_in: int, uses: int) -> None:
    """Print a new initial access token for POST /oauth/register (RFC 7591), once: as the
    admin API's POST /admin/initial-access-tokens, and audited the same way."""
    from . import registration_tokens
    from .admin_cli import record

    try:
        row, token = registration_tokens.create(expires_in, uses, created_by=None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    record("initial_access_token.created", target=row.id, uses=row.uses_left)
    db.session.commit()
    click.echo(f"initial access token: {token}")
    click.echo(f"expires at {row.expires_at:%Y-%m-%dT%H:%M:%SZ}, {row.uses_left} use(s)")


@click.command("init")
@click.option(
    "--demo/--no-demo",
    default=False,
    envvar="TOKEN_SERVICE_DEMO",
    show_envvar=True,
    help="Also load the demo data (printing the secrets of the demo clients it creates).",
)
@click.pass_context
def init_command(ctx: click.Context, demo: bool) -> None:
    """First run, or any start: a signing key if there is none, the schema migrated, and the
    demo data if asked. Idempotent; run once per deployment before the servers (compose's
    one-shot `init` service), never by each server."""
    ctx.invoke(keys_generate, alg=None, if_absent=True)
    ctx.invoke(migrate_command)
    if demo:
        ctx.invoke(demo_command, print_secrets=True)


@click.command("serve")
@click.option("--workers", type=int, default=None, help="Default: $WEB_CONCURRENCY, else 1.")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Requests run at once per worker. Default: $TOKEN_SERVICE_THREADS, else 4.",
)
def serve_command(workers: int | None, threads: int | None) -> None:
    """Serve under granian at $HOST:$PORT (default 127.0.0.1:8000): worker processes with
    keep-alive, each running `threads` requests at once (token_service/serve.py;
    docs/operations.md says how to size them)."""
    if workers is not None:
        os.environ["WEB_CONCURRENCY"] = str(workers)
    if threads is not None:
        os.environ["TOKEN_SERVICE_THREADS"] = str(threads)
    # A process of its own: the metrics directory must be chosen before prometheus_client is
    # first imported, which this command's process has done already.
    os.execv(sys.executable, [sys.executable, "-m", "token_service.serve"])  # noqa: S606


@click.group("notifications")
def notifications_group() -> None:
    """The outbox of notification emails (invitations)."""


@notifications_group.command("send")
@with_appcontext
def notifications_send() -> None:
    """Deliver pending messages through TOKEN_SERVICE_SMTP_URL (retries earlier failures)."""
    if _settings().smtp_url is None:
        raise click.ClickException("TOKEN_SERVICE_SMTP_URL is not set: the outbox is left as is")
    total = 0
    while sent := deliver_pending():
        total += sent
    click.echo(f"{total} message(s) sent")


@click.group("backchannel")
def backchannel_group() -> None:
    """Back-channel logout tokens waiting for their clients (OpenID Connect)."""


@backchannel_group.command("send")
@with_appcontext
def backchannel_send() -> None:
    """POST the logout tokens that are due (retries earlier failures whose backoff is over)."""
    from .backchannel import deliver_due, next_due

    total = 0
    while sent := deliver_due():
        total += sent
    due = next_due()
    click.echo(
        f"{total} logout token(s) delivered"
        + (f"; next retry {due:%Y-%m-%dT%H:%M:%SZ}" if due else "")
    )


def register_commands(app: Flask) -> None:
    from .maintenance import prune_command

    for command in (
        init_command,
        migrate_command,
        demo_command,
        keys_group,
        customers_group,
        clients_group,
        notifications_group,
        backchannel_group,
        prune_command,
    ):
        app.cli.add_command(command)


def main() -> None:
    from . import create_app

    cli = FlaskGroup(create_app=create_app, add_default_commands=False, add_version_option=False)
    cli.add_command(serve_command)
    cli(prog_name="token-service")
