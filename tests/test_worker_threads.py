"""One worker, many threads (issue 18): concurrent refreshes, switches, revocations and
introspections against one app keep every invariant. Each thread owns one session and checks
every answer it gets; all threads check each other's revocations; the database is checked at
the end. Runs on both backends (SQLite + its store, PostgreSQL + Redis)."""

from __future__ import annotations

import base64
import json
import threading

from conftest import Storefront, basic_auth
from sqlalchemy import func, select

from token_service.extensions import db
from token_service.models import RefreshToken
from token_service.security import hash_token

THREADS = 8
ROUNDS = 12
INACTIVE = {"active": False}
ENTITIES = {"alice@acme.test": ["acme", "globex"], "bob@acme.test": ["acme"]}


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


class Shared:
    """What the threads tell each other, and what every answer so far has carried."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.revoked: list[str] = []  # access tokens whose revocation was answered
        self.refresh_tokens: set[str] = set()
        self.jtis: set[str] = set()
        self.errors: list[str] = []

    def issued(self, answer: dict) -> None:
        """No token is ever handed out twice, to the same thread or another."""
        jti = _claims(answer["access_token"])["jti"]
        with self.lock:
            assert answer["refresh_token"] not in self.refresh_tokens, "refresh token reissued"
            assert jti not in self.jtis, "access token reissued"
            self.refresh_tokens.add(answer["refresh_token"])
            self.jtis.add(jti)

    def revoked_so_far(self) -> list[str]:
        with self.lock:
            return list(self.revoked[-4:])


def test_one_worker_under_concurrent_load_keeps_every_invariant(app):
    order_service = basic_auth("order-service", app.secrets["order-service"])
    expected = {}  # (customer id, entity) -> scope, read before the load starts
    setup = Storefront(app.test_client())
    for username, entities in ENTITIES.items():
        for entity in entities:
            answer = setup.login(username, legal_entity_id=entity).json
            expected[(_claims(answer["access_token"])["sub"], entity)] = answer["scope"]
    assert expected[("cus_alice", "acme")] != expected[("cus_alice", "globex")]

    shared = Shared()
    barrier = threading.Barrier(THREADS)
    chains: dict[int, tuple[str, int, str, bool]] = {}

    def introspect(client, token: str) -> dict:
        r = client.post("/oauth/introspect", data={"token": token}, headers=order_service)
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.json

    def refresh(client, token: str, entity: str) -> dict:
        r = Storefront(client).refresh(token, legal_entity_id=entity)
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.json

    def work(i: int) -> None:
        client = app.test_client()
        username = list(ENTITIES)[i % 2]
        entities = ENTITIES[username]
        login = Storefront(client).login(username, legal_entity_id=entities[0]).json
        shared.issued(login)
        sub, sid = _claims(login["access_token"])["sub"], _claims(login["access_token"])["sid"]
        token, rotations = login["refresh_token"], 0
        barrier.wait()
        for n in range(ROUNDS):
            entity = entities[n % len(entities)]
            if n % 4 == 3:
                # Two requests with one token at once: one rotation, one answer for both.
                twins: list = [None, None]

                def twin(k: int, token=token, entity=entity, twins=twins) -> None:
                    twins[k] = refresh(app.test_client(), token, entity)

                pair = [threading.Thread(target=twin, args=(k,)) for k in (0, 1)]
                for t in pair:
                    t.start()
                for t in pair:
                    t.join(timeout=60)
                assert None not in twins, "a twin refresh failed"
                assert twins[0]["refresh_token"] == twins[1]["refresh_token"]
                assert twins[0]["access_token"] == twins[1]["access_token"]
                answer = twins[0]
            else:
                answer = refresh(client, token, entity)
            shared.issued(answer)
            rotations += 1
            claims = _claims(answer["access_token"])
            # This thread's customer, session and entity, with that entity's scopes: never
            # another thread's.
            assert (claims["sub"], claims["sid"]) == (sub, sid)
            assert claims["legal_entity_id"] == answer["legal_entity_id"] == entity
            assert answer["scope"] == claims["scope"] == expected[(sub, entity)]
            token = answer["refresh_token"]

            got = introspect(client, answer["access_token"])
            assert got["active"] is True, got
            assert (got["sub"], got["sid"], got["jti"]) == (sub, sid, claims["jti"])
            assert (got["legal_entity_id"], got["scope"]) == (entity, answer["scope"])

            if n % 3 == 1:  # revoke this access token: inactive at once, for every thread
                r = client.post(
                    "/oauth/revoke",
                    data={"token": answer["access_token"], "client_id": "storefront"},
                )
                assert r.status_code == 200
                assert introspect(client, answer["access_token"]) == INACTIVE
                with shared.lock:
                    shared.revoked.append(answer["access_token"])
            for other in shared.revoked_so_far():
                assert introspect(client, other) == INACTIVE, "a revocation was lost"

        ended = i % 4 == 0
        if ended:  # revoke the whole session: its last access token dies with it
            r = client.post("/oauth/revoke", data={"token": token, "client_id": "storefront"})
            assert r.status_code == 200
            assert introspect(client, answer["access_token"]) == INACTIVE
            assert Storefront(client).refresh(token).status_code == 400
            with shared.lock:
                shared.revoked.append(answer["access_token"])
        chains[i] = (sid, rotations, token, ended)

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # reported by the main thread
            with shared.lock:
                shared.errors.append(f"thread {i}: {exc!r}")
            barrier.abort()

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not shared.errors, shared.errors
    assert len(chains) == THREADS

    client = app.test_client()
    for token in shared.revoked:  # no revocation lost, whatever ran after it
        assert introspect(client, token) == INACTIVE
    with app.app_context():
        for sid, rotations, last, _ in chains.values():
            tokens = db.session.execute(
                select(RefreshToken.token_hash, RefreshToken.consumed_at).where(
                    RefreshToken.session_id == sid
                )
            ).all()
            # Exactly one rotation per refresh (the twins included), one live token at the end.
            assert len(tokens) == rotations + 1, sid
            unconsumed = [h for h, consumed_at in tokens if consumed_at is None]
            assert unconsumed == [hash_token(last)], sid
        live = {sid for sid, _, _, ended in chains.values() if not ended}
        count = db.session.scalar(
            select(func.count()).where(
                RefreshToken.session_id.in_(live), RefreshToken.consumed_at.is_(None)
            )
        )
        assert count == len(live)
