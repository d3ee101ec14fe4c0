"""POST /oauth/token: the password, refresh_token and client_credentials grants (DESIGN §4)."""

from __future__ import annotations

import jwt
import pytest
from conftest import basic_auth
from sqlalchemy import select

from token_service.config import DEFAULT_BASELINE, DEFAULT_GROUP_TEMPLATES
from token_service.extensions import db
from token_service.models import Customer, RefreshToken, Session
from token_service.scopes import split_scopes
from token_service.services import clients, customers, groups, legal_entities

BASELINE = split_scopes(DEFAULT_BASELINE)
ADMIN = BASELINE | split_scopes(DEFAULT_GROUP_TEMPLATES["ADMIN"])
BUYER = BASELINE | split_scopes(DEFAULT_GROUP_TEMPLATES["BUYER"])
CONTACT = BASELINE | split_scopes(DEFAULT_GROUP_TEMPLATES["CONTACT"])


def claims(response) -> dict:
    return jwt.decode(response.json["access_token"], options={"verify_signature": False})


def scopes(response) -> frozenset[str]:
    return split_scopes(response.json["scope"])


# -- password grant -------------------------------------------------------------------------


def test_login_acts_for_default_entity_with_its_groups_scopes(storefront):
    r = storefront.login()
    assert r.status_code == 200, r.json
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["legal_entity_id"] == "acme"
    assert body["legal_entities"] == [
        {"id": "acme", "name": "ACME Corp"},
        {"id": "globex", "name": "Globex"},
    ]
    assert scopes(r) == ADMIN
    assert "order.order_read_le" in scopes(r)
    assert 0 < body["refresh_token_expires_in"] <= 7 * 86400
    assert claims(r)["legal_entity_id"] == "acme"


def test_login_with_asked_entity(storefront):
    r = storefront.login(legal_entity_id="globex")
    assert r.status_code == 200
    assert r.json["legal_entity_id"] == "globex"
    assert scopes(r) == CONTACT


def test_login_with_unassigned_entity_is_invalid_grant(storefront):
    r = storefront.login(legal_entity_id="acme-logistics")
    assert r.status_code == 400
    assert r.json["error"] == "invalid_grant"


def test_login_picks_only_assignment_when_no_default(app, storefront):
    with app.app_context():
        bob = db.session.scalars(select(Customer).where(Customer.email == "bob@acme.test")).one()
        bob.default_legal_entity_id = None
        db.session.commit()
    r = storefront.login("bob@acme.test")
    assert r.json["legal_entity_id"] == "acme"
    assert scopes(r) == BUYER


def test_login_with_several_assignments_and_no_default_acts_for_none(app, storefront):
    with app.app_context():
        alice = db.session.scalars(
            select(Customer).where(Customer.email == "alice@acme.test")
        ).one()
        alice.default_legal_entity_id = None
        db.session.commit()
    r = storefront.login()
    assert r.status_code == 200
    assert r.json["legal_entity_id"] is None
    assert scopes(r) == BASELINE
    assert "legal_entity_id" not in claims(r)


def test_login_default_no_longer_assigned_falls_back(app, storefront):
    with app.app_context():
        carol = customers.create_customer("carol@acme.test", "pw-carol-123456")
        legal_entities.create_legal_entity("Initech", id="initech")
        legal_entities.assign(carol.id, "globex")
        carol.default_legal_entity_id = "initech"  # never assigned there
        db.session.commit()
    r = storefront.login("carol@acme.test", "pw-carol-123456")
    assert r.json["legal_entity_id"] == "globex"


def test_login_email_is_case_insensitive(storefront):
    assert storefront.login("Alice@ACME.test").status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice@acme.test", "wrong"), ("nobody@acme.test", "correct horse battery staple")],
)
def test_bad_credentials_get_one_answer(storefront, username, password):
    r = storefront.login(username, password)
    assert r.status_code == 400
    assert r.json == {
        "error": "invalid_grant",
        "error_description": "Invalid username or password.",
    }


def test_blocked_customer_cannot_log_in(app, storefront):
    with app.app_context():
        db.session.execute(db.update(Customer).values(status="blocked"))
        db.session.commit()
    r = storefront.login()
    assert r.json["error"] == "invalid_grant"


def test_login_scope_narrows_the_session_ceiling(storefront):
    r = storefront.login(scope="order.order_read_le order.history_view")
    assert scopes(r) == {"order.order_read_le", "order.history_view"}
    # The ceiling is fixed for the session: Globex gives only what lies within it.
    r2 = storefront.refresh(r.json["refresh_token"], legal_entity_id="globex")
    assert scopes(r2) == {"order.history_view"}


def test_login_scope_beyond_client_ceiling_is_invalid_scope(storefront):
    r = storefront.login(scope="admin.manage")
    assert r.status_code == 400
    assert r.json["error"] == "invalid_scope"


def test_password_grant_refused_to_non_first_party(app, client):
    r = client.post(
        "/oauth/token",
        data={"grant_type": "password", "username": "alice@acme.test", "password": "x"},
        headers=basic_auth("order-service", app.secrets["order-service"]),
    )
    assert r.status_code == 400
    assert r.json["error"] == "unauthorized_client"


# -- refresh and switching ------------------------------------------------------------------


def test_switch_back_and_forth_without_login(storefront):
    r = storefront.login()
    for entity, expected in [("globex", CONTACT), ("acme", ADMIN), ("globex", CONTACT)]:
        r = storefront.refresh(r.json["refresh_token"], legal_entity_id=entity)
        assert r.status_code == 200, r.json
        assert r.json["legal_entity_id"] == entity
        assert scopes(r) == expected
        assert claims(r)["legal_entity_id"] == entity


def test_refresh_without_entity_keeps_current(storefront):
    r = storefront.refresh(storefront.login(legal_entity_id="globex").json["refresh_token"])
    assert r.json["legal_entity_id"] == "globex"
    assert scopes(r) == CONTACT


def test_refresh_keeps_session_id_and_rotates(storefront):
    first = storefront.login()
    second = storefront.refresh(first.json["refresh_token"])
    assert second.json["refresh_token"] != first.json["refresh_token"]
    assert claims(second)["sid"] == claims(first)["sid"]
    assert claims(second)["auth_time"] == claims(first)["auth_time"]


def test_switch_to_unassigned_entity_fails_and_token_survives(storefront):
    login = storefront.login()
    refused = storefront.refresh(login.json["refresh_token"], legal_entity_id="acme-logistics")
    assert refused.status_code == 400
    assert refused.json["error"] == "invalid_grant"
    unknown = storefront.refresh(login.json["refresh_token"], legal_entity_id="no-such-entity")
    assert unknown.json["error"] == "invalid_grant"
    ok = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert ok.status_code == 200
    assert ok.json["legal_entity_id"] == "globex"


def test_group_scope_change_shows_at_next_refresh(app, storefront):
    login = storefront.login()
    with app.app_context():
        admin = groups.group_of("acme", "ADMIN")
        current = split_scopes(DEFAULT_GROUP_TEMPLATES["ADMIN"])
        groups.set_group_scopes(admin.id, current - {"order.order_read_le"})
        db.session.commit()
    r = storefront.refresh(login.json["refresh_token"])
    assert "order.order_read_le" not in scopes(r)
    assert "approval.approval_manage" in scopes(r)


def test_unassigned_current_entity_falls_back_to_none(app, storefront):
    login = storefront.login(legal_entity_id="globex")
    with app.app_context():
        from token_service.models import Assignment

        alice = db.session.scalars(
            select(Customer).where(Customer.email == "alice@acme.test")
        ).one()
        db.session.delete(db.session.get(Assignment, (alice.id, "globex")))
        db.session.commit()
    r = storefront.refresh(login.json["refresh_token"])
    assert r.status_code == 200
    assert r.json["legal_entity_id"] is None
    assert scopes(r) == BASELINE
    assert r.json["legal_entities"] == [{"id": "acme", "name": "ACME Corp"}]


def test_refresh_scope_narrows_only_this_access_token(storefront):
    login = storefront.login()
    narrow = storefront.refresh(login.json["refresh_token"], scope="order.order_read_le")
    assert scopes(narrow) == {"order.order_read_le"}
    wide = storefront.refresh(narrow.json["refresh_token"])
    assert scopes(wide) == ADMIN


def test_refresh_scope_beyond_ceiling_is_invalid_scope_and_token_survives(storefront):
    login = storefront.login(scope="order.history_view")
    r = storefront.refresh(login.json["refresh_token"], scope="order.order_read_le")
    assert r.json["error"] == "invalid_scope"
    assert storefront.refresh(login.json["refresh_token"]).status_code == 200


def test_refresh_token_bound_to_its_client(app, client, storefront):
    with app.app_context():
        clients.create_client(
            "other-app",
            confidential=False,
            grant_types=["password", "refresh_token"],
            scope="order.history_view",
            first_party=True,
        )
        db.session.commit()
    login = storefront.login()
    r = storefront.refresh(login.json["refresh_token"], client_id="other-app")
    assert r.json["error"] == "invalid_grant"
    assert storefront.refresh(login.json["refresh_token"]).status_code == 200


def test_unknown_refresh_token(storefront):
    r = storefront.refresh("not-a-token")
    assert r.status_code == 400
    assert r.json["error"] == "invalid_grant"


def test_refresh_of_blocked_customer_fails(app, storefront):
    login = storefront.login()
    with app.app_context():
        db.session.execute(db.update(Customer).values(status="blocked"))
        db.session.commit()
    assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"


def test_refresh_of_expired_session_fails(app, storefront):
    login = storefront.login()
    with app.app_context():
        from datetime import timedelta

        from token_service.models import utcnow

        db.session.execute(
            db.update(Session).values(idle_expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"


def test_refresh_tokens_stored_only_as_hashes(app, storefront):
    login = storefront.login()
    token = login.json["refresh_token"]
    with app.app_context():
        hashes = list(db.session.scalars(select(RefreshToken.token_hash)))
    assert token not in hashes
    assert len(hashes) == 1 and len(hashes[0]) == 64


def test_replay_after_grace_window_revokes_session(app, storefront):
    login = storefront.login()
    successor = storefront.refresh(login.json["refresh_token"])
    with app.app_context():
        from datetime import timedelta

        from token_service.models import utcnow

        db.session.execute(
            db.update(RefreshToken)
            .where(RefreshToken.consumed_at.is_not(None))
            .values(consumed_at=utcnow() - timedelta(seconds=60))
        )
        db.session.commit()
    replay = storefront.refresh(login.json["refresh_token"])
    assert replay.json["error"] == "invalid_grant"
    # The whole family is gone: the legitimate successor too.
    assert storefront.refresh(successor.json["refresh_token"]).json["error"] == "invalid_grant"


def test_replay_within_grace_window_gets_same_answer(storefront):
    login = storefront.login()
    first = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    again = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert again.status_code == 200
    assert again.json == first.json
    other = storefront.refresh(login.json["refresh_token"], legal_entity_id="acme")
    assert other.json["error"] == "invalid_grant"
    # The session lives on.
    assert storefront.refresh(first.json["refresh_token"]).status_code == 200


@pytest.mark.parametrize("base_app", ["postgres"], indirect=True)
def test_replay_racing_the_grace_write_asks_the_store_again(app, storefront, monkeypatch):
    """The winner sends its grace response while the rotation commits: a replay that finds the
    token consumed before the response has landed asks once more, and gets it. On Redis only
    (the postgres backend's store): the store file has written the response before the rotation
    commits, so it has nothing to race (test_grace_store.py holds each to its behaviour)."""
    login = storefront.login()
    first = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    store = app.extensions["token_store"]
    real_get, calls = store.get, []

    def late_get(key):
        calls.append(key)
        return None if len(calls) == 1 else real_get(key)

    monkeypatch.setattr(store, "get", late_get)
    again = storefront.refresh(login.json["refresh_token"], legal_entity_id="globex")
    assert len(calls) == 2
    assert again.status_code == 200, again.json
    assert again.json == first.json


# -- client_credentials ---------------------------------------------------------------------


def test_client_credentials_basic(app, client):
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth("admin-cli", app.secrets["admin-cli"]),
    )
    assert r.status_code == 200, r.json
    assert set(r.json) == {"access_token", "token_type", "expires_in", "scope"}
    assert r.json["scope"] == "admin.manage admin.read"
    c = claims(r)
    assert c["sub"] == "admin-cli" == c["client_id"]
    assert "sid" not in c and "legal_entity_id" not in c


def test_client_credentials_post_and_narrow_scope(app, client):
    r = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "admin-cli",
            "client_secret": app.secrets["admin-cli"],
            "scope": "admin.read",
        },
    )
    assert r.json["scope"] == "admin.read"


def test_client_credentials_scope_beyond_ceiling(app, client):
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "admin.read token.introspect"},
        headers=basic_auth("admin-cli", app.secrets["admin-cli"]),
    )
    assert r.json["error"] == "invalid_scope"


def test_public_client_cannot_use_client_credentials(storefront):
    r = storefront.token(grant_type="client_credentials")
    assert r.json["error"] == "unauthorized_client"


def test_a_login_with_an_older_hash_upgrades_it_and_succeeds(app, storefront):
    """Argon2id parameters raised since the password was set: the login rehashes it (a write
    of its own, committed before the session's, which holds the customer's row) and succeeds."""
    from test_passwords import ARGON2_CFFI_WEAKER as weaker  # the demo password, t=1, 8 MiB

    from token_service.security import PASSWORD_HASHER

    with app.app_context():
        alice = db.session.scalars(
            select(Customer).where(Customer.email == "alice@acme.test")
        ).one()
        alice.password_hash = weaker
        db.session.commit()
    r = storefront.login()
    assert r.status_code == 200, r.json
    with app.app_context():
        stored = db.session.scalar(
            select(Customer.password_hash).where(Customer.email == "alice@acme.test")
        )
    assert stored != weaker and not PASSWORD_HASHER.check_needs_rehash(stored)
    assert storefront.login().status_code == 200
