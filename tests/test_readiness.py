"""/readyz: ready only when the database and the store answer and a signing key can sign; with
no usable key every token request would answer 503, so the service is not ready (issue 14)."""

from __future__ import annotations

import pytest

from token_service.keys import KeyRing


@pytest.fixture
def keys_at(app, tmp_path, monkeypatch):
    """Point the app at a keys directory of the test's making."""

    def point(files: dict[str, bytes]) -> KeyRing:
        for name, content in files.items():
            (tmp_path / name).write_bytes(content)
        ring = KeyRing(tmp_path, app.extensions["keyring"].retention_seconds)
        monkeypatch.setitem(app.extensions, "keyring", ring)
        monkeypatch.setattr(app.extensions["token_endpoint"], "keyring", ring)
        return ring

    return point


def test_ready_with_a_key(client):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json == {
        "status": "ok",
        "checks": {"database": "ok", "store": "ok", "signing_key": "ok"},
    }


def test_not_ready_without_a_key(client, keys_at, storefront):
    keys_at({})
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json["status"] == "unavailable"
    assert r.json["checks"] == {"database": "ok", "store": "ok", "signing_key": "missing"}
    # What readiness protects the load balancer from:
    assert storefront.login().status_code == 503


def test_not_ready_with_an_unreadable_key(client, keys_at):
    keys_at({"20260101T000000000000Z-RS256.pem": b"-----BEGIN PRIVATE KEY-----\nbroken\n"})
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json["checks"]["signing_key"] == "unusable"


def test_ready_again_once_a_key_is_generated(client, keys_at):
    ring = keys_at({})
    assert client.get("/readyz").status_code == 503
    ring.generate("ES256")
    assert client.get("/readyz").status_code == 200
