"""Settings are validated once, at start-up; bad values stop the service with a clear message."""

from __future__ import annotations

import json

import pytest

from token_service.config import DEFAULT_GROUP_TEMPLATES, ConfigError, Settings
from token_service.services import groups, legal_entities


def test_defaults():
    s = Settings.from_env({}, instance_path="/tmp/x")
    assert s.database_url == "sqlite:////tmp/x/token_service.sqlite3"
    assert s.redis_url is None
    assert s.issuer == "http://127.0.0.1:8000"
    assert (s.access_token_ttl, s.refresh_grace_seconds) == (300, 10)
    assert (s.refresh_idle_ttl, s.refresh_absolute_ttl) == (7 * 86400, 30 * 86400)


def test_issuer_follows_port_and_postgres_urls_use_psycopg():
    s = Settings.from_env({"PORT": "9000", "DATABASE_URL": "postgres://u@h/db"})
    assert s.issuer == "http://127.0.0.1:9000"
    assert s.database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    "env",
    [
        {"PORT": "abc"},
        {"TOKEN_SERVICE_ACCESS_TOKEN_TTL": "0"},
        {"TOKEN_SERVICE_SIGNING_ALG": "HS256"},
        {"TOKEN_SERVICE_REFRESH_IDLE_TTL": "100", "TOKEN_SERVICE_REFRESH_ABSOLUTE_TTL": "50"},
        {"TOKEN_SERVICE_ACCESS_TOKEN_TTL": "7200"},
        {"TOKEN_SERVICE_SCOPE_TEMPLATES": "/nonexistent.json"},
        {"TOKEN_SERVICE_BACKCHANNEL_NETWORKS": "10.0.0.0/8, intranet"},
    ],
)
def test_bad_values_fail_fast(env):
    with pytest.raises(ConfigError):
        Settings.from_env(env)


def test_back_channel_networks_are_cidrs():
    settings = Settings.from_env({"TOKEN_SERVICE_BACKCHANNEL_NETWORKS": "10.0.0.0/8, fd00::/8"})
    assert [str(n) for n in settings.backchannel_networks] == ["10.0.0.0/8", "fd00::/8"]
    assert Settings.from_env({}).backchannel_networks == ()


def test_scope_templates_from_file(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"baseline": "a.b_c", "BUYER": "order.order_create x.y_z"}))
    s = Settings.from_env({"TOKEN_SERVICE_SCOPE_TEMPLATES": str(path)})
    assert s.baseline_scopes == "a.b_c"
    assert s.group_templates["BUYER"] == "order.order_create x.y_z"
    assert s.group_templates["ADMIN"] == DEFAULT_GROUP_TEMPLATES["ADMIN"]
    path.write_text(json.dumps({"OWNER": "a.b_c"}))
    with pytest.raises(ConfigError):
        Settings.from_env({"TOKEN_SERVICE_SCOPE_TEMPLATES": str(path)})


def test_created_entity_gets_template_bundles(app):
    from dataclasses import replace

    from token_service.extensions import db
    from token_service.models import GroupScope

    settings = app.config["SETTINGS"]
    custom = dict(settings.group_templates, REQUESTER="approval.approval_read_own custom.thing_do")
    app.config["SETTINGS"] = replace(settings, group_templates=custom)
    try:
        with app.app_context():
            legal_entities.create_legal_entity("Initech", id="initech")
            group = groups.group_of("initech", "REQUESTER")
            held = set(
                db.session.scalars(
                    db.select(GroupScope.scope).where(GroupScope.group_id == group.id)
                )
            )
            db.session.commit()
    finally:
        app.config["SETTINGS"] = settings
    assert held == {"approval.approval_read_own", "custom.thing_do"}
