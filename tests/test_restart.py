"""A worker restart forgets no revocation and no login lock (issue 15, defect 6): what the
store holds outlives the process. On the embedded default the store is a SQLite file beside the
database; a restarted worker is a new app on the same files, with a store object of its own."""

from __future__ import annotations

import pytest
from conftest import Storefront, basic_auth, forget_deny_list

from token_service import create_app
from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.kv import RedisStore

INACTIVE = {"active": False}


@pytest.fixture
def restarted(app):
    """The same deployment after its worker died: nothing of the old process is reused."""
    settings = app.config["SETTINGS"]
    if app.backend == "postgres":
        old = app.extensions["token_store"]
        store = RedisStore(settings.redis_url, prefix=old.prefix)
        test_config = {"SETTINGS": settings, "STORE": store, "TESTING": True}
    else:
        test_config = {"SETTINGS": settings, "TESTING": True}  # the store create_app makes
    new = create_app(test_config)
    yield new
    forget_deny_list(new)
    with new.app_context():
        db.engine.dispose()


def _introspect(app, secrets, token: str) -> dict:
    headers = basic_auth("order-service", secrets["order-service"])
    r = app.test_client().post("/oauth/introspect", data={"token": token}, headers=headers)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json


def test_a_revoked_access_token_stays_revoked_after_a_restart(app, storefront, request):
    login = storefront.login().json
    revoked = storefront.client.post(
        "/oauth/revoke", data={"token": login["access_token"], "client_id": "storefront"}
    )
    assert revoked.status_code == 200
    assert _introspect(app, app.secrets, login["access_token"]) == INACTIVE

    new = request.getfixturevalue("restarted")
    # Only the deny-list knows of this revocation: the session itself lives on.
    assert _introspect(new, app.secrets, login["access_token"]) == INACTIVE
    refreshed = Storefront(new.test_client()).refresh(login["refresh_token"]).json
    assert _introspect(new, app.secrets, refreshed["access_token"])["active"] is True


def test_a_login_throttle_survives_a_restart(app, storefront, request):
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free + 1):
        assert storefront.login(password="wrong").status_code == 400
    assert storefront.login().status_code == 429  # locked, even with the right password

    new = request.getfixturevalue("restarted")
    # The first lock lasts a second, maybe over by now; the count of failures must not be:
    # the next failures lock at once, for longer each time (2, 4, 8 s).
    with new.app_context():
        locks = [new.extensions["login_throttle"].failed("alice@acme.test", None) for _ in "abc"]
    assert locks == [2, 4, 8]
    throttled = Storefront(new.test_client()).login(password=DEMO_PASSWORD)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
