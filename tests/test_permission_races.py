"""A permission change racing a login or a refresh of the same customer (issue 15, defect 2):
no token made from data older than an answered change survives it. Many iterations on both
backends, each a real race between two threads of the app; zero survivors allowed.

A survivor is a token that still carries what the change took away (or any token, for a
change that ends the customer's sessions) and that introspection calls active, or that the raw
deny-list (what the resource kit's online check reads) lets through, once the change has been
answered. Whether the token was answered before or after the change does not matter: one
answered before must be denied by the change, one answered after must come from the new data.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest
from conftest import claims_of, deny_listed
from sqlalchemy import select

from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.models import Customer, GroupMember, Session, utcnow
from token_service.oauth2.sessions import NewSession, Rotation, Superseded
from token_service.revocation import fence_issuance, revoke_session
from token_service.security import hash_token
from token_service.services import customers, groups, legal_entities
from token_service.throttle import _keys as throttle_keys

ACTOR = ("client", "admin-cli")
REMOVED = "order.order_read_le"  # held through acme's ADMIN group only
ITERATIONS = 30


def _race(app, issue, change, delay: float):
    """Run `issue` (a token request) and, `delay` seconds after it starts, `change`; returns the
    token response and whether the change finished before the response came back."""
    barrier = threading.Barrier(2)
    out = {}

    def issuer() -> None:
        client = app.test_client()
        barrier.wait()
        out["response"] = issue(client)
        out["answered"] = time.monotonic()

    def changer() -> None:
        barrier.wait()
        time.sleep(delay)
        with app.app_context():
            change()
            db.session.commit()
        out["changed"] = time.monotonic()

    threads = [threading.Thread(target=issuer), threading.Thread(target=changer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return out["response"], out["changed"] < out["answered"]


def _login(client, username: str = "alice@acme.test", **params):
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "storefront",
            "username": username,
            "password": DEMO_PASSWORD,
            **params,
        },
    )


def _refresh(client, refresh_token: str, **params):
    data = {"grant_type": "refresh_token", "client_id": "storefront"}
    return client.post("/oauth/token", data={**data, "refresh_token": refresh_token, **params})


def alice(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Customer.id).where(Customer.email == "alice@acme.test"))


def _rejoin_admin_group(app, customer: str) -> str:
    with app.app_context():
        group = groups.group_of("acme", "ADMIN").id
        if db.session.get(GroupMember, (group, customer)) is None:
            groups.add_member(group, customer)
            db.session.commit()
        return group


def _survives(app, introspect, token: str) -> bool:
    """Denied means denied both ways: by introspection and on the deny-list."""
    return introspect(token)["active"] is not False or not deny_listed(app, token)


def _delays(upto_ms: float):
    rng = random.Random(15)
    return [rng.uniform(0, upto_ms) / 1000 for _ in range(ITERATIONS)]


def test_login_racing_membership_removal(app, introspect):
    """Thread A logs alice in for acme; 0-150 ms later thread B removes her from acme's ADMIN
    group. Login reads her groups, spends an argon2id verification, then writes the session:
    the change lands before the read, inside the verification, or after the write."""
    customer = alice(app)
    outcomes = []
    for delay in _delays(150):
        group = _rejoin_admin_group(app, customer)
        response, after = _race(
            app,
            lambda client: _login(client, legal_entity_id="acme"),
            lambda group=group: groups.remove_membership(group, customer, actor=ACTOR),
            delay,
        )
        assert response.status_code == 200, response.json
        token = response.json["access_token"]
        held = REMOVED in response.json["scope"]
        outcomes.append((held, after))
        assert not (held and _survives(app, introspect, token)), (delay, after)
    print("login races (held the removed scope, change answered first):", outcomes)


def test_switch_racing_membership_removal(app, introspect):
    """A refresh switching globex -> acme races the removal from acme's ADMIN group."""
    customer = alice(app)
    with app.test_client() as client:
        refresh_token = _login(client, legal_entity_id="globex").json["refresh_token"]
    for delay in _delays(4):
        group = _rejoin_admin_group(app, customer)
        with app.test_client() as client:  # back to globex, outside the race
            back = _refresh(client, refresh_token, legal_entity_id="globex")
            assert back.status_code == 200, back.json
            refresh_token = back.json["refresh_token"]
        response, after = _race(
            app,
            lambda client, token=refresh_token: _refresh(client, token, legal_entity_id="acme"),
            lambda group=group: groups.remove_membership(group, customer, actor=ACTOR),
            delay,
        )
        assert response.status_code == 200, response.json
        assert response.json["legal_entity_id"] == "acme"
        refresh_token = response.json["refresh_token"]
        if REMOVED in response.json["scope"]:
            assert not _survives(app, introspect, response.json["access_token"]), (delay, after)


def test_login_racing_block(app, introspect):
    """A login racing the block of its customer: refused, or its token dies with the block."""
    customer = alice(app)
    for delay in _delays(150):
        response, after = _race(
            app,
            lambda client: _login(client),
            lambda: customers.block_customer(customer, actor=ACTOR),
            delay,
        )
        assert response.status_code in (200, 400), response.json
        if response.status_code == 200:
            assert not _survives(app, introspect, response.json["access_token"]), (delay, after)
        else:
            assert after, "refused as blocked only once the block committed"
        with app.app_context():
            customers.unblock_customer(customer, actor=ACTOR)
            db.session.commit()
        # A login refused as blocked counts as a failed login: start each race unthrottled.
        store = app.extensions["token_store"]
        for key, _ in throttle_keys("alice@acme.test", "127.0.0.1"):
            store.delete(key)
            store.delete(key + ":lock")


def test_refresh_racing_session_revocation(app, introspect):
    """A refresh racing an admin's revocation of its session: whatever the refresh answers is
    dead once the revocation is answered, and the session stays revoked."""
    for delay in _delays(4):
        with app.test_client() as client:
            login = _login(client).json
        sid = claims_of(login["access_token"])["sid"]

        def revoke(sid=sid) -> None:
            session = db.session.get(Session, sid)
            revoke_session(session, "revoked_by_admin", actor_type="client", actor_id="admin-cli")

        response, after = _race(
            app, lambda client, t=login["refresh_token"]: _refresh(client, t), revoke, delay
        )
        assert response.status_code in (200, 400), response.json
        if response.status_code == 200:
            assert not _survives(app, introspect, response.json["access_token"]), (delay, after)
            with app.test_client() as client:
                again = _refresh(client, response.json["refresh_token"])
                assert again.json["error"] == "invalid_grant"


def test_login_racing_revocation_of_all_sessions(app, introspect):
    """DELETE /admin/customers/C/sessions racing a login: a token answered before the
    revocation was answered is revoked with the others (one answered after is a new login)."""
    customer = alice(app)
    admin = app.test_client()
    grant = {"grant_type": "client_credentials"}
    bearer = admin.post("/oauth/token", data=grant, auth=("admin-cli", app.secrets["admin-cli"]))
    headers = {"Authorization": f"Bearer {bearer.json['access_token']}"}

    def revoke_all() -> None:
        r = admin.delete(f"/admin/customers/{customer}/sessions", headers=headers)
        assert r.status_code == 200, r.json

    for delay in _delays(150):
        response, after = _race(app, lambda client: _login(client), revoke_all, delay)
        assert response.status_code == 200, response.json
        if not after:
            assert not _survives(app, introspect, response.json["access_token"]), delay


# -- the write's check, deterministically ------------------------------------------------------


def test_writes_refuse_an_outdated_entitlements_version(app):
    """The session store's two writes do nothing, and say so, once the version they carry
    moved."""
    customer = alice(app)
    with app.test_client() as client:
        login = _login(client).json
    token_hash = hash_token(login["refresh_token"])
    sessions = app.extensions["sessions"]
    with app.app_context():
        found = sessions.load_refresh(token_hash)[0]
        login_row = sessions.find_login("alice@acme.test")[0]
    assert found.entitlements_version == login_row.entitlements_version
    with app.app_context():
        fence_issuance([customer])
        db.session.commit()
    now = utcnow()
    rotation = Rotation(
        session_id=found.session_id,
        old_hash=token_hash,
        new_hash=hash_token("successor"),
        customer_id=customer,
        legal_entity_id="acme",
        previous_entity="acme",
        now=now,
        idle_expires_at=now + timedelta(hours=1),
        entitlements_version=found.entitlements_version,
    )
    session = NewSession(
        id="sid_outdated",
        customer_id=customer,
        client_id="storefront",
        scope="",
        legal_entity_id=None,
        auth_time=now,
        created_at=now,
        expires_at=now + timedelta(hours=1),
        idle_expires_at=now + timedelta(hours=1),
    )
    with app.app_context():
        with pytest.raises(Superseded):
            sessions.rotate(rotation)
        with pytest.raises(Superseded):
            sessions.start_session(session, hash_token("first"), found.entitlements_version)
        assert sessions.load_refresh(token_hash)[0].consumed_at is None
        assert sessions.load_refresh(hash_token("successor")) is None
        assert db.session.get(Session, "sid_outdated") is None
    # The presented token still works, on the data as it is now.
    with app.test_client() as client:
        assert _refresh(client, login["refresh_token"]).status_code == 200


@pytest.mark.parametrize("grant", ["login", "refresh"])
def test_grant_reads_again_after_a_change_between_its_read_and_write(
    app, introspect, monkeypatch, grant
):
    """A removal that commits after the grant read alice's groups and before it wrote: the
    grant runs again, and what it answers lacks the removed scope and is live."""
    customer = alice(app)
    group = _rejoin_admin_group(app, customer)
    with app.test_client() as client:
        refresh_token = _login(client).json["refresh_token"]
    endpoint = app.extensions["token_endpoint"]
    original = endpoint._customer_response
    calls = []

    def remove_in_between(*args, **kwargs):
        if not calls:  # another connection, committed: the real race, on both backends
            with app.app_context():
                groups.remove_membership(group, customer, actor=ACTOR)
                db.session.commit()
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(endpoint, "_customer_response", remove_in_between)
    with app.test_client() as client:
        r = _login(client) if grant == "login" else _refresh(client, refresh_token)
    assert r.status_code == 200, r.json
    assert len(calls) == 2, "the first write was refused and the grant ran again"
    assert REMOVED not in r.json["scope"]
    assert introspect(r.json["access_token"])["active"] is True


def test_login_and_refresh_racing_customer_deletion(app, introspect):
    """DELETE /admin/customers/C racing C's login or refresh: never a 5xx, and nothing
    answered survives the deletion."""
    admin = app.test_client()
    grant = {"grant_type": "client_credentials"}
    bearer = admin.post("/oauth/token", data=grant, auth=("admin-cli", app.secrets["admin-cli"]))
    headers = {"Authorization": f"Bearer {bearer.json['access_token']}"}
    for i, delay in enumerate(_delays(60)[:16]):
        email = f"doomed{i}@acme.test"
        with app.app_context():
            customer = customers.create_customer(email, DEMO_PASSWORD).id
            legal_entities.assign(customer, "acme")
            db.session.commit()
        with app.test_client() as client:
            refresh_token = _login(client, username=email).json["refresh_token"]

        def delete(customer=customer) -> None:
            r = admin.delete(f"/admin/customers/{customer}", headers=headers)
            assert r.status_code == 204, r.json

        if i % 2:
            issue = lambda client, t=refresh_token: _refresh(client, t)  # noqa: E731
        else:
            issue = lambda client, email=email: _login(client, username=email)  # noqa: E731
        response, after = _race(app, issue, delete, delay / (1 if i % 2 == 0 else 15))
        assert response.status_code in (200, 400), response.json
        if response.status_code == 200:
            assert not _survives(app, introspect, response.json["access_token"]), (i, after)
