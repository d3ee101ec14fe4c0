"""Lifecycle: membership, assignment, block and entity changes reach live sessions at once;
login throttling; audit events (DESIGN §4, the lifecycle issue)."""

from __future__ import annotations

import pytest
from conftest import deny_listed
from sqlalchemy import select

from token_service.extensions import db
from token_service.models import AuditEvent, Customer, GroupScope
from token_service.services import base, customers, groups, legal_entities

ACTOR = ("client", "admin-cli")
INACTIVE = {"active": False}


def alice(app) -> str:
    with app.app_context():
        return db.session.scalar(select(Customer.id).where(Customer.email == "alice@acme.test"))


def actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def admin_call(app, client, method: str, path: str, **kwargs):
    """One admin API call as admin-cli."""
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("admin-cli", app.secrets["admin-cli"]),
    )
    headers = {"Authorization": f"Bearer {r.json['access_token']}"}
    return client.open("/admin" + path, method=method, headers=headers, **kwargs)


def _remove_membership(app, client, customer):
    group = admin_group(app)
    return admin_call(app, client, "DELETE", f"/groups/{group}/members/{customer}")


def _edit_group_scopes(app, client, customer):
    group = admin_group(app)
    return admin_call(app, client, "PATCH", f"/groups/{group}", json={"scopes": []})


def _remove_assignment(app, client, customer):
    return admin_call(app, client, "DELETE", f"/customers/{customer}/assignments/acme")


def _delete_entity(app, client, customer):
    return admin_call(app, client, "DELETE", "/legal-entities/acme?cascade=true")


def admin_group(app) -> str:
    with app.app_context():
        return groups.group_of("acme", "ADMIN").id


@pytest.mark.parametrize(
    "change",
    [_remove_membership, _edit_group_scopes, _remove_assignment, _delete_entity],
    ids=["membership", "group-scopes", "assignment", "entity"],
)
def test_change_reaches_tokens_issued_before_a_switch(app, client, storefront, introspect, change):
    """Issue 15 defect 1: AT1 acts for acme, then the session switches to globex; a change that
    takes acme's ADMIN permissions away denies AT1, in introspection and on the deny-list."""
    login = storefront.login()
    at1 = login.json["access_token"]
    assert "order.order_read_le" in login.json["scope"]
    switched = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert switched.json["legal_entity_id"] == "globex"
    r = change(app, client, alice(app))
    assert r.status_code in (200, 204), r.get_data(as_text=True)
    assert introspect(at1) == INACTIVE
    assert deny_listed(app, at1)
    # The deny-list works by session: the globex token, older than the change, goes too. The
    # session lives on, and its next token acts for globex again.
    assert deny_listed(app, switched.json["access_token"])
    again = storefront.refresh(switched.json["refresh_token"])
    assert again.json["legal_entity_id"] == "globex"
    assert introspect(again.json["access_token"])["active"] is True
    assert not deny_listed(app, again.json["access_token"])


def test_change_leaves_tokens_of_sessions_that_never_acted_there(app, client, storefront):
    """Sessions are chosen by the entities their live tokens act for, not all of the customer's."""
    login = storefront.login(legal_entity_id="globex")
    assert _remove_membership(app, client, alice(app)).status_code == 204
    assert not deny_listed(app, login.json["access_token"])


def test_adding_scopes_to_a_group_denies_nothing(app, client, storefront, introspect):
    login = storefront.login()
    group = admin_group(app)
    with app.app_context():
        held = list(
            db.session.scalars(select(GroupScope.scope).where(GroupScope.group_id == group))
        )
    r = admin_call(
        app, client, "PATCH", f"/groups/{group}", json={"scopes": [*held, "order.order_create"]}
    )
    assert r.status_code == 200, r.json
    assert introspect(login.json["access_token"])["active"] is True
    assert "order.order_create" in storefront.refresh(login.json["refresh_token"]).json["scope"]


def test_removing_membership_denies_live_token_and_next_refresh_reflects_it(
    app, storefront, introspect
):
    login = storefront.login()
    customer = alice(app)
    with app.app_context():
        admin_group = groups.group_of("acme", "ADMIN").id
        groups.remove_membership(admin_group, customer, actor=ACTOR)
        db.session.commit()
    assert introspect(login.json["access_token"]) == INACTIVE
    r = storefront.refresh(login.json["refresh_token"])
    assert r.status_code == 200
    assert "order.order_read_le" not in r.json["scope"]
    assert introspect(r.json["access_token"])["active"] is True
    assert "group.member_removed" in actions(app)


def test_membership_change_elsewhere_leaves_token_alone(app, storefront, introspect):
    login = storefront.login(legal_entity_id="globex")
    customer = alice(app)
    with app.app_context():
        groups.remove_membership(groups.group_of("acme", "ADMIN").id, customer, actor=ACTOR)
        db.session.commit()
    assert introspect(login.json["access_token"])["active"] is True


def test_removing_assignment(app, storefront, introspect):
    login = storefront.login()
    customer = alice(app)
    with app.app_context():
        legal_entities.remove_assignment(customer, "acme", actor=ACTOR)
        db.session.commit()
        assert db.session.get(Customer, customer).default_legal_entity_id is None
    assert introspect(login.json["access_token"]) == INACTIVE
    assert introspect(login.json["refresh_token"]) == INACTIVE
    r = storefront.refresh(login.json["refresh_token"])
    assert r.json["legal_entity_id"] is None
    assert r.json["legal_entities"] == [{"id": "globex", "name": "Globex"}]
    again = storefront.refresh(r.json["refresh_token"], legal_entity_id="acme")
    assert again.json["error"] == "invalid_grant"


def test_blocking_revokes_every_session(app, storefront, introspect):
    first, second = storefront.login(), storefront.login(legal_entity_id="globex")
    customer = alice(app)
    with app.app_context():
        customers.block_customer(customer, actor=ACTOR)
        db.session.commit()
    for login in (first, second):
        assert introspect(login.json["access_token"]) == INACTIVE
        assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"
    assert storefront.login().json["error"] == "invalid_grant"
    with app.app_context():
        customers.unblock_customer(customer, actor=ACTOR)
        db.session.commit()
    assert storefront.login().status_code == 200
    # Revoked sessions stay revoked.
    assert storefront.refresh(first.json["refresh_token"]).json["error"] == "invalid_grant"


def test_deleting_entity(app, storefront, introspect):
    login = storefront.login(legal_entity_id="globex")
    with app.app_context():
        with pytest.raises(base.ServiceError) as refused:
            legal_entities.delete_legal_entity("globex", actor=ACTOR)
        assert refused.value.status == 409
        legal_entities.delete_legal_entity("globex", cascade=True, actor=ACTOR)
        db.session.commit()
    assert introspect(login.json["access_token"]) == INACTIVE
    r = storefront.refresh(login.json["refresh_token"])
    assert r.json["legal_entity_id"] is None
    assert [e["id"] for e in r.json["legal_entities"]] == ["acme"]


def test_deleting_company_with_subsidiary_needs_cascade(app):
    with app.app_context():
        with pytest.raises(base.ServiceError):
            legal_entities.delete_legal_entity("acme", actor=ACTOR)
        deleted = legal_entities.delete_legal_entity("acme", cascade=True, actor=ACTOR)
        db.session.commit()
    assert set(deleted) == {"acme", "acme-logistics"}


def test_membership_requires_assignment(app):
    with app.app_context():
        bob = db.session.scalar(select(Customer.id).where(Customer.email == "bob@acme.test"))
        with pytest.raises(base.ServiceError) as err:
            groups.add_member(groups.group_of("globex", "BUYER").id, bob)
        assert err.value.status == 409


def test_group_scope_change_denies_members_tokens(app, storefront, introspect):
    login = storefront.login()
    bob = storefront.login("bob@acme.test")
    with app.app_context():
        group = groups.group_of("acme", "ADMIN").id
        groups.set_group_scopes_now(group, ["order.order_read_le"], actor=ACTOR)
        db.session.commit()
    assert introspect(login.json["access_token"]) == INACTIVE
    assert introspect(bob.json["access_token"])["active"] is True  # not a member


def test_session_idle_expiry_at_introspection(app, storefront, introspect):
    from datetime import timedelta

    from token_service.models import Session, utcnow

    login = storefront.login()
    with app.app_context():
        db.session.execute(db.update(Session).values(idle_expires_at=utcnow() - timedelta(1)))
        db.session.commit()
    assert introspect(login.json["access_token"]) == INACTIVE
    assert introspect(login.json["refresh_token"]) == INACTIVE


def test_login_audit_events(app, storefront):
    storefront.login()
    storefront.login(password="wrong")
    login = storefront.login()
    storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert actions(app) == [
        "login.succeeded",
        "login.failed",
        "login.succeeded",
        "session.switched",
    ]


# -- throttling -----------------------------------------------------------------------------


def test_throttle_after_free_attempts_then_backoff(app, storefront):
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free):
        assert storefront.login(password="wrong").status_code == 400
    assert storefront.login(password="wrong").status_code == 400  # counted, locks
    throttled = storefront.login()  # even the right password waits
    assert throttled.status_code == 429
    assert throttled.json["error"] == "slow_down"
    assert int(throttled.headers["Retry-After"]) >= 1
    assert "login.throttled" in actions(app)
    # Other accounts are not affected by alice's lock.
    assert storefront.login("bob@acme.test").status_code == 200


def test_unknown_email_is_throttled_alike(app, storefront):
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free + 1):
        storefront.login("ghost@acme.test")
    assert storefront.login("ghost@acme.test").status_code == 429


def test_success_resets_the_account_counter(app, storefront):
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free):
        storefront.login(password="wrong")
    assert storefront.login().status_code == 200
    for _ in range(free):
        assert storefront.login(password="wrong").status_code == 400


def test_lock_written_before_locks_held_their_expiry_still_holds(app, storefront):
    """Locks used to hold b"1" and only their TTL: after an upgrade they still lock."""
    from token_service.throttle import _keys

    account_key = _keys("alice@acme.test", None)[0][0]
    app.extensions["token_store"].set(account_key + ":lock", b"1", 30)
    throttled = storefront.login()
    assert throttled.status_code == 429
    assert 25 <= int(throttled.headers["Retry-After"]) <= 30


def test_backoff_is_capped(app):
    throttle = app.extensions["login_throttle"]
    delays = [throttle.failed("victim@acme.test", None) for _ in range(40)]
    assert delays[: throttle.free] == [0] * throttle.free
    assert delays[throttle.free : throttle.free + 4] == [1, 2, 4, 8]
    assert max(delays) == throttle.cap == delays[-1]


def test_absolute_expiry_ends_session_despite_activity(app, storefront, introspect):
    from datetime import timedelta

    from token_service.models import Session, utcnow

    login = storefront.login()
    with app.app_context():
        db.session.execute(db.update(Session).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert introspect(login.json["refresh_token"]) == INACTIVE
    assert introspect(login.json["access_token"]) == INACTIVE
    assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"


def test_refresh_extends_idle_expiry_up_to_absolute(app, storefront):
    from datetime import timedelta

    from token_service.models import Session, utcnow

    login = storefront.login()
    with app.app_context():
        db.session.execute(db.update(Session).values(expires_at=utcnow() + timedelta(hours=1)))
        db.session.commit()
    r = storefront.refresh(login.json["refresh_token"])
    assert 3500 < r.json["refresh_token_expires_in"] <= 3600
