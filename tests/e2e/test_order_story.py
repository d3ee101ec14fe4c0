"""The seed's shared-orders story over real HTTP: the token service and the reference order
service under `token-service serve`, on PostgreSQL + Redis (DESIGN section 5)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests

from .conftest import BIN, REDIS_URL, REPO, _free_port, _stop

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def orders_url(server):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_SERVICE_")}
    env.update(
        ORDER_SERVICE_ISSUER=server.issuer,
        REDIS_URL=REDIS_URL,
        TOKEN_SERVICE_REDIS_PREFIX=server.redis_prefix,
    )
    process = subprocess.Popen(
        [
            str(BIN / "granian"),
            "--interface",
            "wsgi",
            "--workers",
            "2",
            "--port",
            str(port),
            "wsgi:app",
        ],
        cwd=REPO / "examples" / "order_service",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/orders", timeout=1)
            break
        except requests.RequestException:  # refused, or slow to answer on a loaded machine
            time.sleep(0.1)
    yield url
    _stop(process)


@pytest.mark.parametrize("server", ["postgres"], indirect=True)
def test_shared_orders_story(server, orders_url):
    token_url = f"{server.issuer}/oauth/token"

    def login(email):
        r = requests.post(
            token_url,
            data={
                "grant_type": "password",
                "client_id": "storefront",
                "username": email,
                "password": PASSWORD,
            },
        )
        assert r.status_code == 200, r.text
        return r.json()

    def refresh(tokens, entity=None):
        data = {
            "grant_type": "refresh_token",
            "client_id": "storefront",
            "refresh_token": tokens["refresh_token"],
        }
        if entity:
            data["legal_entity_id"] = entity
        r = requests.post(token_url, data=data)
        assert r.status_code == 200, r.text
        return r.json()

    def get(path, tokens):
        return requests.get(
            f"{orders_url}{path}", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )

    def ids(response):
        assert response.status_code == 200, response.text
        return sorted(o["id"] for o in response.json()["items"])

    admin_token = requests.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=("admin-cli", server.secrets["admin-cli"]),
    ).json()["access_token"]
    admin = {"Authorization": f"Bearer {admin_token}"}

    # Alice logs in (ACME Corp) and sees only her own orders...
    alice = login("alice@acme.test")
    assert alice["legal_entity_id"] == "acme"
    assert ids(get("/orders", alice)) == ["o-1001"]
    # ...and, acting for ACME with order.order_read_le, every ACME order, bob's too.
    assert ids(get("/legal-entity-orders/acme", alice)) == ["o-1001", "o-1002", "o-1003"]
    assert get("/orders/o-1002", alice).status_code == 200
    # Not the subsidiary's: her token acts for ACME Corp, not ACME Logistics.
    assert get("/legal-entity-orders/acme-logistics", alice).status_code == 403
    assert get("/orders/o-2001", alice).status_code == 404
    # Bob, a buyer, sees his own orders only.
    bob = login("bob@acme.test")
    assert ids(get("/orders", bob)) == ["o-1002", "o-1003"]
    assert get("/legal-entity-orders/acme", bob).status_code == 403

    # Switching to Globex: her own orders there; the company view is refused.
    alice = refresh(alice, "globex")
    assert ids(get("/orders", alice)) == ["o-3001"]
    assert get("/legal-entity-orders/globex", alice).status_code == 403
    assert get("/legal-entity-orders/acme", alice).status_code == 403
    alice = refresh(alice, "acme")
    assert ids(get("/legal-entity-orders/acme", alice)) == ["o-1001", "o-1002", "o-1003"]

    # An admin takes the order-read scope from ACME's ADMIN group.
    groups = requests.get(
        f"{server.issuer}/admin/groups",
        params={"legal_entity_id": "acme", "code": "ADMIN"},
        headers=admin,
    ).json()["items"]
    group = groups[0]
    scopes = [s for s in group["scopes"] if s != "order.order_read_le"]
    r = requests.patch(
        f"{server.issuer}/admin/groups/{group['id']}", json={"scopes": scopes}, headers=admin
    )
    assert r.status_code == 200, r.text
    # Her live token is refused at once by the online check; after her next refresh, too.
    assert get("/legal-entity-orders/acme", alice).status_code == 401
    alice = refresh(alice)
    assert "order.order_read_le" not in alice["scope"].split()
    assert get("/legal-entity-orders/acme", alice).status_code == 403
    assert ids(get("/orders", alice)) == ["o-1001"]

    # A revoked session is refused at once.
    r = requests.post(
        f"{server.issuer}/oauth/revoke",
        data={"token": bob["refresh_token"], "client_id": "storefront"},
    )
    assert r.status_code == 200
    assert get("/orders", bob).status_code == 401

    # Key rotation: old tokens stay valid, new ones are accepted, no restart.
    r = requests.post(f"{server.issuer}/admin/signing-keys/rotate", headers=admin)
    assert r.status_code in (200, 201), r.text
    time.sleep(1.1)  # every worker of the token service notices the new key within a second
    new_alice = login("alice@acme.test")
    assert new_alice["access_token"].split(".")[0] != alice["access_token"].split(".")[0]
    assert get("/orders", alice).status_code == 200
    assert get("/orders", new_alice).status_code == 200
