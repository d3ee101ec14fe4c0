"""OpenID Connect Back-Channel Logout 1.0 (issue 27, item 5): when a session ends, its client's
`backchannel_logout_uri` gets a signed logout token, POSTed after the commit with retries and
backoff. A relying party in the test (http.server on 127.0.0.1) receives it and verifies it
with joserfc against /jwks.json. Both backends."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_network
from urllib.parse import parse_qs

import pytest
from conftest import claims_of
from frontdoor import authorize_params
from joserfc import jwt
from joserfc.jwk import KeySet
from test_admin import Admin
from test_authorize import exchange, sign_in_to_callback
from test_metrics import Delta

from token_service import backchannel
from token_service.extensions import db
from token_service.models import BackchannelLogout, Client, RefreshToken, Session, utcnow
from token_service.revocation import revoke_session

EVENT = "http://schemas.openid.net/event/backchannel-logout"


class RelyingParty:
    """A back-channel logout endpoint: records each POST, answers from `statuses` (then 200)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.statuses: list[int] = []
        self.arrived = threading.Condition()
        rp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                status = rp.statuses.pop(0) if rp.statuses else 200
                with rp.arrived:
                    rp.received.append(
                        {
                            "path": self.path,
                            "content_type": self.headers["Content-Type"],
                            "form": parse_qs(body),
                            "status": status,
                        }
                    )
                    rp.arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_port}/backchannel-logout"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
        return self.received

    def tokens(self) -> list[str]:
        return [r["form"]["logout_token"][0] for r in self.received if r["status"] in (200, 204)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def allow_networks(app, monkeypatch, *cidrs: str) -> None:
    settings = replace(
        app.config["SETTINGS"], backchannel_networks=tuple(ip_network(c) for c in cidrs)
    )
    monkeypatch.setitem(app.config, "SETTINGS", settings)


@pytest.fixture
def rp(app, monkeypatch):
    """The relying party, on loopback: a network the deployment allows (the issuer is not)."""
    allow_networks(app, monkeypatch, "127.0.0.0/8")
    party = RelyingParty()
    yield party
    party.close()


@pytest.fixture
def manual(app, monkeypatch):
    """Delivery only when the test calls backchannel.deliver_due (no worker thread)."""
    monkeypatch.setitem(app.config, "BACKCHANNEL_LOGOUT_THREAD", False)
    return app


@pytest.fixture
def admin(app):
    return Admin(app.test_client(), "admin-cli", app.secrets["admin-cli"])


def with_uri(app, client_id: str, uri: str) -> None:
    with app.app_context():
        db.session.get(Client, client_id).backchannel_logout_uri = uri
        db.session.commit()


def deliver(app, now=None) -> int:
    with app.app_context():
        return backchannel.deliver_due(now=now)


def rows(app) -> list[BackchannelLogout]:
    with app.app_context():
        found = db.session.scalars(db.select(BackchannelLogout).order_by(BackchannelLogout.id))
        result = list(found)
        db.session.expunge_all()
        return result


def verify(client, token: str, client_id: str, sid: str, sub: str) -> dict:
    """What a relying party checks (§2.6), with joserfc against the published keys."""
    keys = KeySet.import_key_set(client.get("/jwks.json").json)
    decoded = jwt.decode(token, keys)
    assert decoded.header["typ"] == "logout+jwt"
    claims = decoded.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": "http://issuer.test"},
        aud={"essential": True, "value": client_id},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
        sub={"essential": True, "value": sub},
        sid={"essential": True, "value": sid},
    ).validate(claims)
    assert claims["events"] == {EVENT: {}}
    assert "nonce" not in claims
    assert 0 < claims["exp"] - claims["iat"] <= 300
    return claims


def test_discovery_says_back_channel_logout_is_supported(client):
    metadata = client.get("/.well-known/openid-configuration").json
    assert metadata["backchannel_logout_supported"] is True
    assert metadata["backchannel_logout_session_supported"] is True


def test_rp_initiated_logout_is_posted_to_the_client_after_the_commit(shop, client, browser, rp):
    """The automatic path: the worker thread started by the commit delivers it."""
    with_uri(shop, "web-shop", rp.uri)
    params = authorize_params()
    tokens = exchange(client, params, sign_in_to_callback(browser, params)["code"]).json
    id_token = claims_of(tokens["id_token"])
    bye = client.get("/oauth/logout", query_string={"id_token_hint": tokens["id_token"]})
    assert bye.status_code in (200, 303)
    [received] = rp.wait_for(1)
    assert received["path"] == "/backchannel-logout"
    assert received["content_type"] == "application/x-www-form-urlencoded"
    verify(client, rp.tokens()[0], "web-shop", id_token["sid"], id_token["sub"])
    for _ in range(100):  # the worker marks it sent once the client has answered
        if rows(shop)[0].sent_at is not None:
            break
        time.sleep(0.05)
    [row] = rows(shop)
    assert row.sent_at is not None and row.attempts == 1 and row.last_error is None


def test_admin_revoke_all_sends_one_token_per_session(manual, storefront, admin, client, rp):
    with_uri(manual, "storefront", rp.uri)
    sids = {claims_of(storefront.login().json["access_token"])["sid"] for _ in range(2)}
    assert admin.delete("/customers/cus_alice/sessions").status_code in (200, 204)
    assert rp.received == []  # never from the request that ended the sessions
    assert deliver(manual) == 2
    got = {
        verify(client, t, "storefront", claims_of(t)["sid"], "cus_alice")["sid"]
        for t in rp.tokens()
    }
    assert got == sids
    assert deliver(manual) == 0  # delivered once


def test_block_sends_a_logout_token(manual, storefront, admin, client, rp):
    with_uri(manual, "storefront", rp.uri)
    sid = claims_of(storefront.login(username="bob@acme.test").json["access_token"])["sid"]
    assert admin.post("/customers/cus_bob/block").status_code in (200, 204)
    assert deliver(manual) == 1
    verify(client, rp.tokens()[0], "storefront", sid, "cus_bob")


def test_reuse_detection_sends_a_logout_token(manual, storefront, client, rp):
    with_uri(manual, "storefront", rp.uri)
    login = storefront.login()
    sid = claims_of(login.json["access_token"])["sid"]
    storefront.refresh(login.json["refresh_token"])
    with manual.app_context():  # past the grace window
        db.session.execute(
            db.update(RefreshToken)
            .where(RefreshToken.consumed_at.is_not(None))
            .values(consumed_at=utcnow() - timedelta(seconds=60))
        )
        db.session.commit()
    assert storefront.refresh(login.json["refresh_token"]).json["error"] == "invalid_grant"
    assert deliver(manual) == 1
    verify(client, rp.tokens()[0], "storefront", sid, "cus_alice")


def test_a_failing_client_is_retried_with_backoff(manual, storefront, admin, client, rp):
    with_uri(manual, "storefront", rp.uri)
    sid = claims_of(storefront.login().json["access_token"])["sid"]
    rp.statuses = [500, 503]
    assert admin.delete("/customers/cus_alice/sessions").status_code in (200, 204)
    start = utcnow()
    assert deliver(manual, now=start) == 0
    [row] = rows(manual)
    assert row.attempts == 1 and row.sent_at is None and row.last_error == "HTTP 500"
    assert (
        start + backchannel.backoff(1) <= row.next_attempt_at <= utcnow() + backchannel.backoff(1)
    )
    assert deliver(manual, now=start + timedelta(seconds=1)) == 0  # not due yet
    assert len(rp.received) == 1
    later = row.next_attempt_at
    assert deliver(manual, now=later) == 0
    [row] = rows(manual)
    assert row.attempts == 2 and row.last_error == "HTTP 503"
    assert later + backchannel.backoff(2) <= row.next_attempt_at
    assert row.next_attempt_at <= max(later, utcnow()) + backchannel.backoff(2)
    assert backchannel.backoff(2) == 2 * backchannel.backoff(1)
    assert deliver(manual, now=row.next_attempt_at) == 1
    [row] = rows(manual)
    assert row.attempts == 3 and row.sent_at is not None and row.last_error is None
    assert row.logout_token == ""  # not kept once delivered
    assert [r["status"] for r in rp.received] == [500, 503, 200]
    verify(client, rp.tokens()[0], "storefront", sid, "cus_alice")


def test_a_redirect_is_not_followed_and_the_client_is_given_up_on(manual, monkeypatch, rp):
    monkeypatch.setattr(backchannel, "MAX_ATTEMPTS", 2)
    with manual.app_context():
        token = backchannel.logout_token("storefront", "cus_alice", "sid-1")
        db.session.add(
            BackchannelLogout(
                client_id="storefront", uri=rp.uri, logout_token=token, next_attempt_at=utcnow()
            )
        )
        db.session.commit()
    rp.statuses = [302, 302, 302]
    far = utcnow() + timedelta(days=1)
    assert deliver(manual, now=far) == 0
    assert deliver(manual, now=far + timedelta(days=1)) == 0
    assert deliver(manual, now=far + timedelta(days=2)) == 0  # given up after MAX_ATTEMPTS
    assert len(rp.received) == 2
    assert rows(manual)[0].last_error == "HTTP 302"


def test_a_late_retry_is_signed_again(manual, monkeypatch, client, rp):
    with manual.app_context():
        token = backchannel.logout_token("storefront", "cus_alice", "sid-1")
        db.session.add(
            BackchannelLogout(
                client_id="storefront", uri=rp.uri, logout_token=token, next_attempt_at=utcnow()
            )
        )
        db.session.commit()
    now = time.time() + 600
    monkeypatch.setattr(time, "time", lambda: now)
    assert deliver(manual) == 1
    monkeypatch.undo()
    [sent] = rp.tokens()
    assert sent != token and claims_of(sent)["exp"] == int(now) + backchannel.LOGOUT_TOKEN_SECONDS


def test_a_client_without_a_uri_gets_nothing(manual, storefront, admin, rp):
    storefront.login()
    assert admin.delete("/customers/cus_alice/sessions").status_code in (200, 204)
    assert rows(manual) == []
    assert deliver(manual) == 0 and rp.received == []


def test_a_rollback_sends_nothing(manual, storefront, rp):
    with_uri(manual, "storefront", rp.uri)
    sid = claims_of(storefront.login().json["access_token"])["sid"]
    with manual.app_context():
        session = db.session.get(Session, sid)
        revoke_session(session, "test", actor_type="admin", actor_id="t")
        pending = [o for o in db.session.new if isinstance(o, BackchannelLogout)]
        assert len(pending) == 1  # the logout token, waiting for this transaction's commit
        db.session.rollback()
        assert db.session.get(Session, sid).revoked_at is None
    assert rows(manual) == []
    assert deliver(manual) == 0 and rp.received == []


def test_the_cli_sends_what_is_due(manual, storefront, admin, rp):
    with_uri(manual, "storefront", rp.uri)
    storefront.login()
    assert admin.delete("/customers/cus_alice/sessions").status_code in (200, 204)
    result = manual.test_cli_runner().invoke(args=["backchannel", "send"])
    assert result.exit_code == 0, result.output
    assert "1 logout token(s) delivered" in result.output
    assert len(rp.tokens()) == 1


def test_deleting_a_client_with_a_uri_and_live_sessions_works(manual, storefront, admin, rp):
    """Its logout tokens go with it (the outbox row's foreign key cascades)."""
    with_uri(manual, "storefront", rp.uri)
    storefront.login()
    assert admin.delete("/clients/storefront").status_code in (200, 204)
    assert rows(manual) == []
    assert deliver(manual) == 0 and rp.received == []


ENDINGS = {
    "customer_revokes_refresh_token": lambda client, admin, login: client.post(
        "/oauth/revoke", data={"token": login["refresh_token"], "client_id": "storefront"}
    ),
    "password_change": lambda client, admin, login: admin.patch(
        "/customers/cus_alice", json={"password": "a brand new passphrase"}
    ),
    "admin_revokes_one": lambda client, admin, login: admin.delete(
        f"/customers/cus_alice/sessions/{claims_of(login['access_token'])['sid']}"
    ),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_every_way_a_session_ends_sends_a_logout_token(
    manual, storefront, client, admin, rp, ending
):
    with_uri(manual, "storefront", rp.uri)
    login = storefront.login().json
    answer = ENDINGS[ending](client, admin, login)
    assert answer.status_code in (200, 204), answer.get_data(as_text=True)
    assert deliver(manual) == 1
    sid = claims_of(login["access_token"])["sid"]
    verify(client, rp.tokens()[0], "storefront", sid, "cus_alice")


def test_prune_deletes_delivered_logout_tokens_after_a_day(manual, storefront, admin, rp):
    from token_service.maintenance import prune

    with_uri(manual, "storefront", rp.uri)
    storefront.login()
    assert admin.delete("/customers/cus_alice/sessions").status_code in (200, 204)
    with manual.app_context():
        assert prune().backchannel_logouts == 0  # pending: never pruned
    assert deliver(manual) == 1
    with manual.app_context():
        assert prune().backchannel_logouts == 0  # delivered just now: kept a day
        db.session.execute(
            db.update(BackchannelLogout).values(created_at=utcnow() - timedelta(days=2))
        )
        db.session.commit()
        assert prune().backchannel_logouts == 1
    assert rows(manual) == []


def test_an_unreachable_client_is_rescheduled(manual, storefront, admin, rp):
    rp.close()  # nothing listens there any more
    with_uri(manual, "storefront", rp.uri)
    storefront.login()
    assert admin.delete("/customers/cus_alice/sessions").status_code in (200, 204)
    start = utcnow()
    assert deliver(manual, now=start) == 0
    [row] = rows(manual)
    assert row.attempts == 1 and row.sent_at is None
    assert row.last_error == "ConnectionRefusedError"
    assert (
        start + backchannel.backoff(1) <= row.next_attempt_at <= utcnow() + backchannel.backoff(1)
    )
    rp.close = lambda: None  # closed already


def test_login_and_refresh_never_look_for_back_channel_clients(manual, storefront, monkeypatch):
    """The hot paths: only a session's end reads a client's back-channel URI."""
    with_uri(manual, "storefront", "http://127.0.0.1:9/never")

    def refuse(*args, **kwargs):
        raise AssertionError("a login or a refresh enqueued a logout")

    monkeypatch.setattr(backchannel, "enqueue", refuse)
    login = storefront.login()
    assert storefront.refresh(login.json["refresh_token"]).status_code == 200
    assert rows(manual) == []


def outbox_row(app, uri: str) -> None:
    with app.app_context():
        token = backchannel.logout_token("storefront", "cus_alice", "sid-1")
        db.session.add(
            BackchannelLogout(
                client_id="storefront", uri=uri, logout_token=token, next_attempt_at=utcnow()
            )
        )
        db.session.commit()


@pytest.mark.parametrize(
    "uri",
    [
        "https://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "https://10.1.2.3/logout",
        "https://[fd00::1]/logout",
        "http://127.0.0.1:9/logout",  # loopback, while the issuer is not
        "https://localhost/logout",
        "https://100.64.0.1/logout",  # shared address space
        "https://0.0.0.0/logout",
    ],
)
def test_a_uri_to_a_non_public_address_is_refused_without_a_connection(manual, monkeypatch, uri):
    """Server-side request forgery: a registrant's URI never reaches the service's neighbours."""
    connections = []
    monkeypatch.setattr(
        backchannel.socket, "create_connection", lambda *a, **k: connections.append(a)
    )
    outbox_row(manual, uri)
    assert deliver(manual) == 0
    [row] = rows(manual)
    assert row.last_error == "address not allowed" and row.sent_at is None
    assert connections == []


def test_an_allowed_private_network_is_reached(manual, monkeypatch, rp, client):
    delta = Delta(client)
    outbox_row(manual, rp.uri)
    assert deliver(manual) == 1
    allow_networks(manual, monkeypatch)  # none: loopback refused again
    outbox_row(manual, rp.uri)
    assert deliver(manual) == 0
    assert rows(manual)[-1].last_error == "address not allowed"
    assert len(rp.received) == 1
    counted = "token_service_backchannel_logouts_total"
    assert delta(counted, outcome="delivered") == 1 and delta(counted, outcome="refused") == 1


def test_loopback_is_reached_while_the_issuer_is_on_loopback(manual, monkeypatch, rp):
    allow_networks(manual, monkeypatch)
    dev = replace(manual.config["SETTINGS"], issuer="http://127.0.0.1:8000")
    monkeypatch.setitem(manual.config, "SETTINGS", dev)
    outbox_row(manual, rp.uri)
    assert deliver(manual) == 1


def test_the_connection_goes_to_the_vetted_address_not_a_second_lookup(manual, monkeypatch, rp):
    """DNS rebinding: the name is resolved once, checked, and that address is the one used."""
    port = int(rp.uri.split(":")[2].split("/")[0])
    answers = iter([[(2, 1, 6, "", ("127.0.0.1", port))], [(2, 1, 6, "", ("169.254.169.254", 80))]])
    real = backchannel.socket.getaddrinfo

    def lookup(host, *args, **kwargs):
        return next(answers) if host == "rp.example" else real(host, *args, **kwargs)

    monkeypatch.setattr(backchannel.socket, "getaddrinfo", lookup)
    outbox_row(manual, f"http://rp.example:{port}/backchannel-logout")
    assert deliver(manual) == 1
    [received] = rp.received
    assert received["path"] == "/backchannel-logout"


def test_a_served_worker_sends_what_a_stopped_process_left(app, monkeypatch, rp, client):
    """A row left due by a process that stopped goes out when a worker starts, not only at the
    next end of a session (token-service serve builds each worker's app with served_app)."""
    import token_service
    from token_service import serve

    outbox_row(app, rp.uri)
    monkeypatch.setattr(token_service, "create_app", lambda: app)
    assert serve.served_app() is app
    [received] = rp.wait_for(1)
    verify(client, received["form"]["logout_token"][0], "storefront", "sid-1", "cus_alice")
    for _ in range(100):  # the worker marks it sent once the client has answered
        if rows(app)[0].sent_at is not None:
            break
        time.sleep(0.05)
    assert rows(app)[0].sent_at is not None
