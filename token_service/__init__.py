"""OAuth 2 token service for B2B commerce: `create_app()` builds the Flask application."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Flask is imported by create_app only: token_service.resource needs none of it
    from flask import Flask

__all__ = ["create_app"]


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from the environment (or `test_config["SETTINGS"]`), database,
    store, key ring, blueprints, error handlers and CLI."""
    from flask import Flask

    from . import logs
    from .config import Settings
    from .database import configure_engine
    from .extensions import db
    from .keys import KeyRing
    from .kv import embedded_store_path, make_store
    from .oauth2 import grace
    from .oauth2.grants import TokenEndpoint
    from .oauth2.introspect import Introspection
    from .oauth2.sessions import for_database
    from .rate import KeyValueRateCounter
    from .revocation import DenyList
    from .throttle import KeyValueLoginThrottle

    app = Flask(__name__, instance_relative_config=True)
    app.json.sort_keys = False
    test_config = test_config or {}
    settings = test_config.get("SETTINGS") or Settings.from_env(instance_path=app.instance_path)
    logs.configure(settings.log_format, settings.log_level)
    app.config.update(
        SETTINGS=settings,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=configure_engine(settings.database_url, settings.threads),
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.config.update({k: v for k, v in test_config.items() if k != "SETTINGS"})
    if settings.database_url.startswith("sqlite:///"):
        from pathlib import Path

        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )

    db.init_app(app)
    store = test_config.get("STORE") or make_store(
        settings.redis_url,
        settings.redis_prefix,
        embedded_store_path(settings.database_url, app.instance_path),
    )
    keyring = KeyRing(settings.keys_dir, settings.access_token_ttl_max + 60)
    # The ports of the protocol code, each on its backend: the session store on the
    # database, the others on the shared key-value store (kv/).
    sessions = for_database(settings.database_url)
    grace_store = grace.for_store(store)
    throttle = KeyValueLoginThrottle(store, settings)
    app.extensions["token_store"] = store
    app.extensions["deny_list"] = DenyList(store)
    app.extensions["keyring"] = keyring
    app.extensions["sessions"] = sessions
    app.extensions["grace_store"] = grace_store
    app.extensions["login_throttle"] = throttle
    app.extensions["rate_counter"] = KeyValueRateCounter(store)
    app.extensions["token_endpoint"] = TokenEndpoint(
        settings, keyring, grace_store, sessions, throttle
    )
    app.extensions["introspection"] = Introspection(settings, keyring, sessions)

    from .api import (
        admin,
        demo_page,
        emporix,
        errors,
        frontdoor,
        oauth,
        openapi,
        public,
        registration,
        self_service,
    )

    app.register_blueprint(public.bp)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(frontdoor.bp)
    app.register_blueprint(demo_page.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(self_service.bp)
    app.register_blueprint(emporix.bp)  # Emporix-compatible customer API (README)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(registration.bp)  # RFC 7591 / RFC 7592 dynamic registration
    errors.register(app)
    from .api import observe
    from .api.body import BufferedBody
    from .api.cors import Cors
    from .api.front import OAuthFront
    from .slots import Slots

    app.wsgi_app = Cors(app, app.wsgi_app)  # CORS for browser apps (the front adds its own)
    app.extensions["oauth_front"] = app.wsgi_app = OAuthFront(app, app.wsgi_app)
    app.wsgi_app = BufferedBody(
        app.wsgi_app, app.config["MAX_CONTENT_LENGTH"], Slots(settings.threads)
    )
    observe.install(app)  # outermost: every request's id, log line and metrics
    if settings.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    from .cli import register_commands

    register_commands(app)
    from .admin_cli import register as register_admin_cli

    register_admin_cli(app)
    return app
