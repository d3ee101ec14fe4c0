"""The `token-service` command: database, demo data, keys, customers, clients, serving."""

from __future__ import annotations

import os
import sys

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from .extensions import db
from .notifications import deliver_pending


def _settings():
    return current_app.config["SETTINGS"]


@click.command("migrate")
@with_appcontext
def migrate_command() -> None:
    """Create or upgrade the database schema (Alembic) and seed the scope catalogue."""
    from .database import upgrade
    from .directory import seed_catalogue

    upgrade(db.engine)
    seed_catalogue()
    db.session.commit()
    click.echo(f"database ready: {db.engine.url.render_as_string(hide_password=True)}")


@click.command("demo")
@click.option("--print-secrets/--no-print-secrets", default=True)
@with_appcontext
def demo_command(print_secrets: bool) -> None:
    """Load the demo companies, customers and clients (idempotent); set and print new secrets
    for the demo's confidential clients."""
    from .demo import load_demo

    secrets = load_demo()
    db.session.commit()
    if print_secrets:
        for client_id, secret in secrets.items():
            click.echo(f"client {client_id} secret: {secret}")
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


@customers_group.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--legal-entity", "legal_entities", multiple=True, help="Assign (repeatable).")
@with_appcontext
def customers_create(email: str, password: str, legal_entities: tuple[str, ...]) -> None:
    """Create a customer, optionally assigned to legal entities (their CONTACT group)."""
    from .directory import DirectoryError, assign, create_customer

    try:
        customer = create_customer(email, password)
        for entity in legal_entities:
            assign(customer.id, entity)
    except DirectoryError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"customer {customer.id} {customer.email}")


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
@with_appcontext
def clients_create(
    client_id, public, first_party, grants, scope, audience, redirect_uris, post_logout
) -> None:
    """Register a client; a confidential client's secret is printed once."""
    from .directory import DirectoryError, create_client

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
        )
    except DirectoryError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"client {client.client_id}" + (f" secret: {secret}" if secret else " (public)"))


@click.command("init")
@click.option(
    "--demo/--no-demo",
    default=False,
    envvar="TOKEN_SERVICE_DEMO",
    show_envvar=True,
    help="Also load the demo data and print the demo clients' new secrets.",
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
        prune_command,
    ):
        app.cli.add_command(command)


def main() -> None:
    from . import create_app

    cli = FlaskGroup(create_app=create_app, add_default_commands=False, add_version_option=False)
    cli.add_command(serve_command)
    cli(prog_name="token-service")
