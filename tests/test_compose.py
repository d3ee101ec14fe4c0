"""The compose stack starts from nothing with `docker compose up` (issue 14). No Docker engine
runs here, so this checks the file's structure: the services, their health checks, the volumes,
and the order in which they start; and that the image and the init command fit it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from flask.cli import ScriptInfo

from token_service import create_app, serve
from token_service.cli import init_command, serve_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_the_services(services):
    assert set(services) == {"init", "token-service", "postgres", "redis"}
    assert services["init"]["image"] == services["token-service"]["image"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")


@pytest.mark.parametrize("name", ["token-service", "postgres", "redis"])
def test_long_running_services_have_health_checks(services, name):
    check = services[name]["healthcheck"]
    assert check["test"] and check["interval"] and check["retries"]


def test_the_service_is_healthy_only_when_ready(services):
    assert "/readyz" in " ".join(services["token-service"]["healthcheck"]["test"])


def test_init_runs_once_before_the_servers(services):
    init = services["init"]
    assert init["command"] == ["token-service", "init"]
    assert init.get("restart", "no") == "no"
    assert "healthcheck" not in init  # one-shot: it finishes, it is not served
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    after = services["token-service"]["depends_on"]
    assert after["init"]["condition"] == "service_completed_successfully"
    assert after["postgres"]["condition"] == "service_healthy"
    assert after["redis"]["condition"] == "service_healthy"
    # Migrations run in init only: the servers' command (the image's CMD) does not migrate.
    assert "command" not in services["token-service"]
    assert "migrate" not in _dockerfile_cmd()


def test_demo_data_only_when_asked(services):
    assert services["init"]["environment"]["TOKEN_SERVICE_DEMO"] == "${TOKEN_SERVICE_DEMO:-0}"


def test_keys_live_in_a_volume_written_by_init_only(compose, services):
    assert {"keys", "pgdata", "redisdata"} <= set(compose["volumes"])
    assert "keys:/app/keys" in services["init"]["volumes"]
    assert "keys:/app/keys:ro" in services["token-service"]["volumes"]
    for service in services.values():  # nothing to generate or chown on the host first
        assert not any(v.startswith(("./", "/")) for v in service.get("volumes", []))
    for name in ("init", "token-service"):
        assert services[name]["environment"]["TOKEN_SERVICE_KEYS_DIR"] == "/app/keys"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown tokensvc /app/keys" in dockerfile  # a fresh volume starts with this owner
    assert "USER tokensvc" in dockerfile


def test_data_survives_in_volumes(services):
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redisdata:/data" in services["redis"]["volumes"]


def test_servers_share_one_configuration(services):
    init, server = services["init"]["environment"], services["token-service"]["environment"]
    for name in ("DATABASE_URL", "REDIS_URL", "TOKEN_SERVICE_ISSUER"):
        assert init[name] == server[name]
    assert server["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in server["DATABASE_URL"]
    assert server["REDIS_URL"].startswith("redis://redis:6379")


def test_metrics_on_their_own_port_not_published(services):
    server = services["token-service"]
    port = server["environment"]["TOKEN_SERVICE_METRICS_PORT"]
    assert port in server["expose"]
    assert not any(p.endswith(f":{port}") for p in server["ports"])
    # The image serves with `token-service serve`, which runs token_service.serve: its main
    # process serves the metrics port for every worker (tests/e2e/test_metrics_workers.py).
    assert _dockerfile_cmd() == 'CMD ["token-service", "serve"]'
    assert '"token_service.serve"' in inspect.getsource(serve_command.callback)
    assert "on_startup(lambda: _serve_metrics_port(host))" in inspect.getsource(serve.main)


def _dockerfile_cmd() -> str:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return next(line for line in lines if line.startswith("CMD "))


def test_init_is_idempotent_and_loads_demo_data_when_asked(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TOKEN_SERVICE_KEYS_DIR": str(tmp_path / "keys"),
        "TOKEN_SERVICE_LOG_FORMAT": "json",
        "REDIS_URL": "",
    }
    runner = CliRunner()
    first = _invoke(runner, env)
    assert "generated" in first and "database ready" in first
    assert list((tmp_path / "keys").glob("*.pem"))
    second = _invoke(runner, {**env, "TOKEN_SERVICE_DEMO": "1"})
    assert "signing key present" in second
    assert "client admin-cli secret:" in second
    assert len(list((tmp_path / "keys").glob("*.pem"))) == 1


def _invoke(runner: CliRunner, env: dict) -> str:
    result = runner.invoke(
        init_command, [], env=env, obj=ScriptInfo(create_app=create_app), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output
