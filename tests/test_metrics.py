"""Prometheus metrics: the values move where each event happens, /metrics can be disabled, put
behind a token or moved to its own port (issue 14). Across worker processes: tests/e2e."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from conftest import basic_auth
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from token_service import metrics
from token_service.api.observe import Observed
from token_service.config import ConfigError, Settings
from token_service.extensions import db
from token_service.kv import RedisStore, StoreUnavailable
from token_service.models import RefreshToken, utcnow


def scrape(client, **headers) -> dict[tuple, float]:
    """Every sample of GET /metrics: {(name, (sorted label pairs)): value}."""
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Delta:
    """Samples before and after: how much a metric moved."""

    def __init__(self, client) -> None:
        self.client = client
        self.before = scrape(client)

    def __call__(self, name: str, **labels) -> float:
        return value(scrape(self.client), name, **labels) - value(self.before, name, **labels)


def test_requests_are_counted_per_route_grant_and_status(client, storefront):
    delta = Delta(client)
    assert storefront.login().status_code == 200
    assert storefront.login(password="wrong").status_code == 400
    client.get("/jwks.json")
    client.get("/admin/customers/cus_alice/nothing-here")
    count = "token_service_request_duration_seconds_count"
    token = {"route": "/oauth/token", "grant_type": "password"}
    assert delta(count, status="200", **token) == 1
    assert delta(count, status="400", **token) == 1
    assert delta(count, route="/jwks.json", grant_type="", status="200") == 1
    assert delta(count, route="unmatched", grant_type="", status="404") == 1
    errors = "token_service_request_errors_total"
    assert delta(errors, status="400", error="invalid_grant", **token) == 1
    assert delta(errors, status="200", error="", **token) == 0
    # The histogram has its buckets; a login is slower than the smallest.
    bucket = "token_service_request_duration_seconds_bucket"
    assert delta(bucket, status="200", le="+Inf", **token) == 1


def test_grant_type_label_is_bounded(client):
    delta = Delta(client)
    client.post("/oauth/token", data={"grant_type": "x" * 50, "client_id": "storefront"})
    count = "token_service_request_duration_seconds_count"
    assert delta(count, route="/oauth/token", grant_type="other", status="400") == 1


def test_tokens_switches_and_refusals(app, client, storefront):
    delta = Delta(client)
    login = storefront.login()
    switched = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert switched.status_code == 200
    same = storefront.refresh(switched.json["refresh_token"])  # stays on Globex
    refused = storefront.refresh(same.json["refresh_token"], legal_entity_id="acme-logistics")
    assert refused.json["error"] == "invalid_grant"
    auth = basic_auth("admin-cli", app.secrets["admin-cli"])
    assert client.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=auth)
    assert delta("token_service_tokens_issued_total", subject="customer") == 3
    assert delta("token_service_tokens_issued_total", subject="client") == 1
    assert delta("token_service_entity_switches_total") == 1
    assert delta("token_service_entity_switch_refusals_total") == 1


def test_grace_replays_and_reuse_detections(app, client, storefront):
    delta = Delta(client)
    login = storefront.login()
    first = storefront.refresh(login.json["refresh_token"])
    again = storefront.refresh(login.json["refresh_token"])
    assert again.json == first.json
    assert delta("token_service_grace_replays_total") == 1
    with app.app_context():
        db.session.execute(
            db.update(RefreshToken)
            .where(RefreshToken.consumed_at.is_not(None))
            .values(consumed_at=utcnow() - timedelta(seconds=60))
        )
        db.session.commit()
    assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"
    assert delta("token_service_refresh_reuse_detections_total") == 1
    revoked = "token_service_revocations_total"
    assert delta(revoked, kind="session", reason="refresh_token_reuse") == 1
    # The family is revoked once: a second replay counts as reuse no more.
    storefront.refresh(login.json["refresh_token"])
    assert delta("token_service_refresh_reuse_detections_total") == 1


def test_revocations_by_kind_and_reason(client, storefront):
    delta = Delta(client)
    login = storefront.login().json
    for token in (login["access_token"], login["refresh_token"]):
        r = client.post("/oauth/revoke", data={"token": token, "client_id": "storefront"})
        assert r.status_code == 200
    revoked = "token_service_revocations_total"
    assert delta(revoked, kind="access_token", reason="revoked_by_client") == 1
    assert delta(revoked, kind="session", reason="revoked_by_client") == 1


def test_throttled_logins(app, client, storefront):
    delta = Delta(client)
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free + 1):
        storefront.login(password="wrong")
    assert storefront.login(password="wrong").status_code == 429
    assert delta("token_service_logins_throttled_total") == 1


def test_signing_key_age_and_count(app, isolated_keys):
    client = observed(app)  # on the private key ring
    samples = scrape(client)
    age = value(samples, "token_service_signing_key_age_seconds")
    assert 0 < age < 86400
    assert value(samples, "token_service_signing_keys") == len(isolated_keys.all_keys())
    isolated_keys.generate("ES256")
    samples = scrape(client)
    assert value(samples, "token_service_signing_key_age_seconds") < age
    assert value(samples, "token_service_signing_keys") == len(isolated_keys.all_keys())


def test_redis_errors_are_counted():
    before = metrics.BACKEND_ERRORS.labels("redis")._value.get()
    dead = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable):
        dead.get("anything")
    with pytest.raises(StoreUnavailable):
        dead.send_set("k", b"v", 5).wait()
    assert metrics.BACKEND_ERRORS.labels("redis")._value.get() - before == 2


def test_deny_list_copy_state_writes_only_on_change(monkeypatch):
    writes = []
    monkeypatch.setattr(metrics.DENY_LIST_COPY_LIVE, "set", writes.append)
    monkeypatch.setattr(metrics, "_copy_live", [None])
    for live in (False, False, True, True, True, False):
        metrics.deny_list_copy(live)
    assert writes == [0, 1, 0]


# -- where /metrics is served ------------------------------------------------------------------


def observed(app, **settings) -> Client:
    """A client of the app under an `Observed` layer built from changed settings."""
    changed = replace(app.config["SETTINGS"], **settings)
    grants = app.extensions["token_endpoint"].grants
    wsgi = Observed(changed, app.extensions["keyring"], grants, app.extensions["oauth_front"])
    return Client(wsgi)


def test_metrics_behind_a_token(app):
    client = observed(app, metrics_token="scrape-me-please")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eA=="}):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json["error"] == "invalid_token"
    samples = scrape(client, Authorization="Bearer scrape-me-please")
    count = "token_service_request_duration_seconds_count"
    assert value(samples, count, route="/metrics", grant_type="", status="401") >= 3


@pytest.mark.parametrize("settings", [{"metrics_enabled": False}, {"metrics_port": 9100}])
def test_metrics_off_or_on_their_own_port_are_not_on_the_service_port(app, settings):
    client = observed(app, **settings)
    assert client.get("/metrics").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_metrics_off_counts_no_requests(app, client):
    delta = Delta(client)
    observed(app, metrics_enabled=False).get("/healthz")
    count = "token_service_request_duration_seconds_count"
    assert delta(count, route="/healthz", grant_type="", status="200") == 0


def test_metrics_settings(app):
    defaults = Settings.from_env({})
    assert (defaults.metrics_enabled, defaults.metrics_token, defaults.metrics_port) == (
        True,
        None,
        None,
    )
    s = Settings.from_env(
        {"TOKEN_SERVICE_METRICS": "off", "TOKEN_SERVICE_METRICS_PORT": "9100"},
    )
    assert (s.metrics_enabled, s.metrics_port) == (False, 9100)
    assert Settings.from_env({"TOKEN_SERVICE_METRICS_TOKEN": "t"}).metrics_token == "t"
    for bad in (
        {"TOKEN_SERVICE_METRICS": "maybe"},
        {"TOKEN_SERVICE_METRICS_PORT": "8000"},  # the service's own port
        {"TOKEN_SERVICE_METRICS_PORT": "x"},
    ):
        with pytest.raises(ConfigError):
            Settings.from_env(bad)


def test_a_dead_workers_live_gauges_are_dropped_at_scrape_and_a_live_ones_stay(tmp_path):
    """Two "workers" set a live gauge in a multi-process directory; one exits (no hook runs:
    as after a crash). The next scrape shows the live one's series only."""
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry, generate_latest

    code = (
        "import os, sys; from prometheus_client import Gauge\n"
        "Gauge('worker_up', 'h', multiprocess_mode='liveall').set(1)\n"
        "print(os.getpid(), flush=True); sys.stdin.readline()\n"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": ""}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    pids = [int(w.stdout.readline()) for w in workers]
    workers[0].communicate(b"\n", timeout=30)  # the first one exits
    registry = CollectorRegistry()
    registry.register(metrics._LiveWorkers(None, str(tmp_path)))
    text = generate_latest(registry).decode()
    workers[1].communicate(b"\n", timeout=30)
    assert f'worker_up{{pid="{pids[1]}"}} 1.0' in text
    assert f'pid="{pids[0]}"' not in text
    assert not list(tmp_path.glob(f"gauge_liveall_{pids[0]}.db"))
