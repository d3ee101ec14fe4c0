"""Settings from the environment, validated once at start-up: a bad value stops the service."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .inputs import ascii_int

#: Scopes every logged-in customer holds, whatever their groups (DESIGN section 2).
DEFAULT_BASELINE = (
    "customer.customerprofile_view customer.customerprofile_edit order.history_view "
    "quote.quote_read_own quote.quote_manage_own"
)

#: Scope bundles of the predefined groups that each new legal entity gets.
DEFAULT_GROUP_TEMPLATES = {
    "ADMIN": (
        "customermanagement.legalentity_read_own approval.approval_read_own "
        "approval.approval_manage_own order.order_create order.order_read_le "
        "customer.customer_read_own customer.customer_manage_own iam.assignment_create_own "
        "iam.assignment_delete_own approval.approval_read approval.approval_manage"
    ),
    "BUYER": (
        "customermanagement.legalentity_read_own approval.approval_read_own "
        "approval.approval_manage_own order.order_create"
    ),
    "REQUESTER": (
        "customermanagement.legalentity_read_own approval.approval_read_own "
        "approval.approval_manage_own"
    ),
    "CONTACT": "customermanagement.legalentity_read_own",
}

SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
SMTP_SCHEMES = ("smtp", "smtps", "smtp+starttls")
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Emporix's tenant names: lower case, a letter first, 3 to 16 characters.
TENANT_PATTERN = re.compile(r"[a-z][a-z0-9]{2,15}")


class ConfigError(ValueError):
    """A setting is missing or malformed."""


def _int(env: dict, name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = ascii_int(raw.strip(), 18)
    if value is None:
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _switch(env: dict, name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "on", "true", "yes"):
        return True
    if raw in ("0", "off", "false", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def _choice(env: dict, name: str, choices: tuple, default: str, upper: bool = False) -> str:
    raw = env.get(name) or default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _default_log_format() -> str:
    """Text for a person at a terminal (`make run`), JSON for everything else."""
    return "console" if sys.stderr.isatty() else "json"


def _networks(env, name: str) -> tuple:
    """Comma-separated CIDRs (`10.0.0.0/8, fd00::/8`) as ip_network objects."""
    networks = []
    for value in (env.get(name) or "").split(","):
        if value.strip():
            try:
                networks.append(ipaddress.ip_network(value.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{name}: {value.strip()!r} is not a network (CIDR)") from None
    return tuple(networks)


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    database_url: str
    redis_url: str | None
    issuer: str
    keys_dir: Path
    signing_alg: str = "RS256"
    audience: str = "commerce-api"
    access_token_ttl: int = 300
    # Upper bound of any client's access-token lifetime: how long a retired key stays published
    # and how long a revoked session stays deny-listed.
    access_token_ttl_max: int = 3600
    refresh_idle_ttl: int = 7 * 86400
    refresh_absolute_ttl: int = 30 * 86400
    refresh_grace_seconds: int = 10
    baseline_scopes: str = DEFAULT_BASELINE
    group_templates: dict = field(default_factory=lambda: dict(DEFAULT_GROUP_TEMPLATES))
    max_form_bytes: int = 8192
    login_throttle_free_attempts: int = 5
    login_throttle_max_delay: int = 900
    # Reverse proxies in front of the service whose X-Forwarded-For is trusted (throttling by
    # client address needs the real address).
    trusted_proxies: int = 0
    # Prefix of every key in Redis: deployments sharing one Redis database stay apart.
    redis_prefix: str = "ts:"
    # Company self-service invitations: how long an activation link lives, how many
    # invitations one inviter may send per hour, where the link points, how mail goes out
    # (smtp://, smtps:// or smtp+starttls:// URL; "console": print it, for development;
    # unset: the outbox only, for an external mailer).
    invitation_ttl: int = 7 * 86400
    invitation_rate_limit: int = 20
    activation_url: str = ""
    smtp_url: str | None = None
    mail_from: str = "token-service@localhost"
    # Seconds a client may take to send a request's head, or keep an idle connection open,
    # before the server closes it (token_service/serve.py).
    read_timeout: int = 10
    # Requests that run the app at once per worker, its slots (token_service/slots.py;
    # `token-service serve` reads the same variable): the database pool is sized to them.
    threads: int = 4
    # Prometheus metrics (see docs/operations.md): served at /metrics on the service's port,
    # behind `metrics_token` if set, or only on `metrics_port` (by the server's main process).
    metrics_enabled: bool = True
    metrics_token: str | None = None
    metrics_port: int | None = None
    # "json": one JSON object per line; "console": aligned, coloured text for a terminal.
    log_format: str = "json"
    log_level: str = "INFO"
    # The Emporix-compatible layer (api/emporix.py): the one tenant this deployment serves, the
    # storefront client its logins and refreshes go through, the anonymous tokens' lifetime,
    # and how many anonymous tokens (logins and refreshes) one client address gets a minute
    # (0: no limit).
    tenant: str = "demo"
    emporix_client_id: str = "storefront"
    anonymous_token_ttl: int = 3600
    anonymous_rate_limit: int = 60
    #: Private networks back-channel logout tokens may be POSTed to (CIDRs); any other address
    #: that is not a public one (private, loopback, link-local such as a cloud's metadata
    #: service, shared, reserved) is refused at delivery. Loopback is allowed while the
    #: issuer itself is on loopback (development).
    backchannel_networks: tuple = ()

    @classmethod
    def from_env(cls, env: dict | None = None, instance_path: str = "instance") -> Settings:
        """Read and validate settings; raises ConfigError on the first bad value."""
        env = dict(os.environ if env is None else env)
        port = _int(env, "PORT", 8000)
        database_url = env.get("DATABASE_URL") or (
            f"sqlite:///{Path(instance_path).resolve() / 'token_service.sqlite3'}"
        )
        if database_url.startswith("postgres://"):  # Heroku-style URLs
            database_url = "postgresql://" + database_url[len("postgres://") :]
        if database_url.startswith("postgresql://"):
            database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
        alg = env.get("TOKEN_SERVICE_SIGNING_ALG", "RS256")
        if alg not in SIGNING_ALGS:
            raise ConfigError(f"TOKEN_SERVICE_SIGNING_ALG must be one of {SIGNING_ALGS}")
        templates = dict(DEFAULT_GROUP_TEMPLATES)
        baseline = env.get("TOKEN_SERVICE_BASELINE_SCOPES", DEFAULT_BASELINE)
        templates_file = env.get("TOKEN_SERVICE_SCOPE_TEMPLATES")
        if templates_file:
            try:
                loaded = json.loads(Path(templates_file).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"TOKEN_SERVICE_SCOPE_TEMPLATES: {exc}") from None
            baseline = loaded.pop("baseline", baseline)
            unknown = set(loaded) - set(DEFAULT_GROUP_TEMPLATES)
            if unknown:
                raise ConfigError(f"TOKEN_SERVICE_SCOPE_TEMPLATES: unknown groups {unknown}")
            templates.update(loaded)
        smtp_url = env.get("TOKEN_SERVICE_SMTP_URL") or None
        if smtp_url not in (None, "console") and (
            urlsplit(smtp_url).scheme not in SMTP_SCHEMES or not urlsplit(smtp_url).hostname
        ):
            raise ConfigError(
                "TOKEN_SERVICE_SMTP_URL must be console or smtp://, smtps://, "
                "smtp+starttls://[user:password@]host[:port]"
            )
        issuer = env.get("TOKEN_SERVICE_ISSUER", f"http://127.0.0.1:{port}").rstrip("/")
        settings = cls(
            database_url=database_url,
            redis_url=env.get("REDIS_URL") or None,
            issuer=issuer,
            keys_dir=Path(env.get("TOKEN_SERVICE_KEYS_DIR", "keys")).resolve(),
            signing_alg=alg,
            audience=env.get("TOKEN_SERVICE_AUDIENCE", "commerce-api"),
            access_token_ttl=_int(env, "TOKEN_SERVICE_ACCESS_TOKEN_TTL", 300),
            access_token_ttl_max=_int(env, "TOKEN_SERVICE_ACCESS_TOKEN_TTL_MAX", 3600),
            refresh_idle_ttl=_int(env, "TOKEN_SERVICE_REFRESH_IDLE_TTL", 7 * 86400),
            refresh_absolute_ttl=_int(env, "TOKEN_SERVICE_REFRESH_ABSOLUTE_TTL", 30 * 86400),
            refresh_grace_seconds=_int(env, "TOKEN_SERVICE_REFRESH_GRACE", 10, minimum=0),
            baseline_scopes=baseline,
            group_templates=templates,
            login_throttle_free_attempts=_int(env, "TOKEN_SERVICE_LOGIN_FREE_ATTEMPTS", 5),
            login_throttle_max_delay=_int(env, "TOKEN_SERVICE_LOGIN_MAX_DELAY", 900),
            trusted_proxies=_int(env, "TOKEN_SERVICE_TRUSTED_PROXIES", 0, minimum=0),
            redis_prefix=env.get("TOKEN_SERVICE_REDIS_PREFIX", "ts:"),
            invitation_ttl=_int(env, "TOKEN_SERVICE_INVITATION_TTL", 7 * 86400),
            invitation_rate_limit=_int(env, "TOKEN_SERVICE_INVITATION_RATE_LIMIT", 20),
            activation_url=env.get("TOKEN_SERVICE_ACTIVATION_URL") or f"{issuer}/activate",
            smtp_url=smtp_url,
            mail_from=env.get("TOKEN_SERVICE_MAIL_FROM", "token-service@localhost"),
            read_timeout=_int(env, "TOKEN_SERVICE_READ_TIMEOUT", 10),
            threads=_int(env, "TOKEN_SERVICE_THREADS", 4),
            metrics_enabled=_switch(env, "TOKEN_SERVICE_METRICS", True),
            metrics_token=env.get("TOKEN_SERVICE_METRICS_TOKEN") or None,
            metrics_port=_int(env, "TOKEN_SERVICE_METRICS_PORT", 0, minimum=0) or None,
            log_format=_choice(env, "TOKEN_SERVICE_LOG_FORMAT", LOG_FORMATS, _default_log_format()),
            log_level=_choice(env, "TOKEN_SERVICE_LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
            tenant=env.get("TOKEN_SERVICE_TENANT") or "demo",
            emporix_client_id=env.get("TOKEN_SERVICE_EMPORIX_CLIENT_ID") or "storefront",
            anonymous_token_ttl=_int(env, "TOKEN_SERVICE_EMPORIX_ANONYMOUS_TTL", 3600),
            anonymous_rate_limit=_int(
                env, "TOKEN_SERVICE_EMPORIX_ANONYMOUS_RATE_LIMIT", 60, minimum=0
            ),
            backchannel_networks=_networks(env, "TOKEN_SERVICE_BACKCHANNEL_NETWORKS"),
        )
        if not TENANT_PATTERN.fullmatch(settings.tenant):
            raise ConfigError(
                "TOKEN_SERVICE_TENANT must be 3 to 16 lower-case letters and digits, "
                f"a letter first, got {settings.tenant!r}"
            )
        if settings.anonymous_token_ttl > settings.access_token_ttl_max:
            raise ConfigError(
                "TOKEN_SERVICE_EMPORIX_ANONYMOUS_TTL exceeds TOKEN_SERVICE_ACCESS_TOKEN_TTL_MAX"
            )
        if settings.metrics_port is not None and settings.metrics_port == port:
            raise ConfigError("TOKEN_SERVICE_METRICS_PORT must differ from PORT")
        if settings.access_token_ttl > settings.access_token_ttl_max:
            raise ConfigError(
                "TOKEN_SERVICE_ACCESS_TOKEN_TTL exceeds TOKEN_SERVICE_ACCESS_TOKEN_TTL_MAX"
            )
        if settings.refresh_idle_ttl > settings.refresh_absolute_ttl:
            raise ConfigError("TOKEN_SERVICE_REFRESH_IDLE_TTL exceeds the absolute lifetime")
        return settings
