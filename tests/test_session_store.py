"""The session store's contract (oauth2/sessions), held directly against each implementation:
PostgresSessions on PostgreSQL, SqliteSessions on the embedded default. No HTTP here: what the
grants rely on, operation by operation."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from token_service.extensions import db
from token_service.models import AuditEvent, RefreshToken, Session, utcnow
from token_service.oauth2.sessions import (
    NewCode,
    NewSession,
    Rotation,
    SessionStore,
    Superseded,
    refusal,
)
from token_service.oauth2.sessions.postgres import PostgresSessions
from token_service.oauth2.sessions.sqlite import SqliteSessions
from token_service.revocation import fence_issuance
from token_service.security import hash_token
from token_service.slots import Slots

THREADS = 8


def _store(app) -> SessionStore:
    return app.extensions["sessions"]


def test_each_backend_has_its_own_implementation(app):
    expected = PostgresSessions if app.backend == "postgres" else SqliteSessions
    assert type(_store(app)) is expected


def _start(app, *, entity="acme", idle=timedelta(hours=1), sid="sid_contract") -> tuple:
    """A new session for alice; returns (session, first token's hash, her login row)."""
    sessions = _store(app)
    with app.app_context():
        customer, _ = sessions.find_login("Alice@ACME.test")  # emails are found case-blind
        now = utcnow()
        session = NewSession(
            id=sid,
            customer_id=customer.id,
            client_id="storefront",
            scope="order.order_read",
            legal_entity_id=entity,
            auth_time=now,
            created_at=now,
            expires_at=now + timedelta(days=1),
            idle_expires_at=now + idle,
        )
        first = hash_token(f"first-{sid}")
        sessions.start_session(session, first, customer.entitlements_version)
    return session, first, customer


def _rotation(found, new_hash: str, entity: str | None) -> Rotation:
    now = utcnow()
    return Rotation(
        session_id=found.session_id,
        old_hash=found.token_hash,
        new_hash=new_hash,
        customer_id=found.customer_id,
        legal_entity_id=entity,
        previous_entity=found.legal_entity_id,
        now=now,
        idle_expires_at=now + timedelta(hours=1),
        entitlements_version=found.entitlements_version,
    )


def _actions(app, target: str) -> list[str]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(AuditEvent.action).where(AuditEvent.target == target).order_by(AuditEvent.id)
            )
        )


def test_a_session_starts_with_its_token_and_login_event_and_reads_back(app):
    session, first, customer = _start(app)
    with app.app_context():
        found, (entities, grants) = _store(app).load_refresh(first)
    assert (found.session_id, found.customer_id, found.client_id) == (
        session.id,
        customer.id,
        "storefront",
    )
    assert found.legal_entity_id == "acme" and found.consumed_at is None
    assert found.customer_status == "active" and found.revoked_at is None
    assert found.expires_at == session.expires_at
    assert refusal(found, utcnow()) is None
    # The entitlement rows: entities by name, every group scope with its entity.
    assert [e["id"] for e in entities] == ["acme", "globex"]
    assert ("acme", "order.order_read_le") in {(g.legal_entity_id, g.scope) for g in grants}
    assert _actions(app, session.id) == ["login.succeeded"]


def test_exactly_one_of_concurrent_rotations_consumes_the_token(app):
    session, first, _ = _start(app)
    with app.app_context():
        found = _store(app).load_refresh(first)[0]
    barrier = threading.Barrier(THREADS)
    won = [None] * THREADS

    def rotate(i: int) -> None:
        with app.app_context():
            barrier.wait()
            won[i] = _store(app).rotate(
                _rotation(found, hash_token(f"next-{i}"), ["acme", "globex"][i % 2])
            )

    threads = [threading.Thread(target=rotate, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert won.count(True) == 1 and won.count(False) == THREADS - 1, won
    winner = won.index(True)
    with app.app_context():
        consumed = _store(app).load_refresh(first)[0]
        successor, _ = _store(app).load_refresh(hash_token(f"next-{winner}"))
        tokens = db.session.scalar(
            select(func.count()).where(RefreshToken.session_id == session.id)
        )
        moved = db.session.get(Session, session.id).legal_entity_id
    # The consumed token names its one successor (how the grace window finds the answer).
    assert consumed.consumed_at is not None
    assert consumed.successor_hash == hash_token(f"next-{winner}")
    assert tokens == 2 and successor.consumed_at is None
    assert successor.legal_entity_id == moved == ["acme", "globex"][winner % 2]
    # A switch is audited with the rotation that made it, and only then.
    switched = ["session.switched"] if moved != "acme" else []
    assert _actions(app, session.id) == ["login.succeeded", *switched]


def test_a_consumed_token_rotates_no_more(app):
    _, first, _ = _start(app)
    with app.app_context():
        found = _store(app).load_refresh(first)[0]
        assert _store(app).rotate(_rotation(found, hash_token("second"), "acme")) is True
        assert _store(app).rotate(_rotation(found, hash_token("third"), "acme")) is False
        assert _store(app).load_refresh(hash_token("third")) is None


def test_writes_made_from_outdated_entitlements_write_nothing(app):
    session, first, customer = _start(app)
    with app.app_context():
        found = _store(app).load_refresh(first)[0]
        fence_issuance([customer.id])  # a permission change
        db.session.commit()
        with pytest.raises(Superseded):
            _store(app).rotate(_rotation(found, hash_token("second"), "globex"))
        later = session._replace(id="sid_later")
        with pytest.raises(Superseded):
            _store(app).start_session(later, hash_token("later"), customer.entitlements_version)
        assert _store(app).load_refresh(first)[0].consumed_at is None
        assert _store(app).load_refresh(hash_token("second")) is None
        assert db.session.get(Session, "sid_later") is None
        assert _store(app).load_customer(customer.id)[0].entitlements_version > (
            customer.entitlements_version
        )
    assert _actions(app, session.id) == ["login.succeeded"]


def test_expiry_and_revocation_end_a_session(app):
    _, first, _ = _start(app, idle=timedelta(seconds=-1), sid="sid_idle")
    session, live, _ = _start(app, sid="sid_live")
    with app.app_context():
        idle = _store(app).load_refresh(first)[0]
        assert refusal(idle, utcnow()) == "The session has expired."
        assert refusal(_store(app).session_state("sid_idle", None), utcnow()) is not None
        _store(app).revoke_family(
            session.id,
            "refresh_token_reuse",
            actor_type="system",
            actor_id=None,
            event=("refresh_token.reuse_detected", {"actor_type": "client", "actor_id": "x"}),
        )
        revoked = _store(app).load_refresh(live)[0]
        state = _store(app).session_state(session.id, "acme")
    assert revoked.revoked_at is not None and refusal(revoked, utcnow())
    assert state.revoked_at is not None and state.tokens_not_before is not None
    assert state.assigned  # alice is still assigned to ACME; only the session ended
    assert _actions(app, session.id) == ["login.succeeded", "session.revoked"]
    # Its access tokens are deny-listed at once.
    with app.app_context():
        assert _store(app).is_denied(session.id, "any-jti", state.tokens_not_before - 1)


def test_session_state_knows_the_assignment(app):
    session, _, _ = _start(app)
    with app.app_context():
        assert _store(app).session_state(session.id, "globex").assigned
        assert not _store(app).session_state(session.id, "initech").assigned
        assert _store(app).session_state("sid_unknown", None) is None


def test_a_code_is_consumed_once_of_concurrent_exchanges(app):
    with app.app_context():
        customer, _ = _store(app).find_login("alice@acme.test")
        code = _store(app).store_code(
            NewCode(
                client_id="storefront",
                redirect_uri="http://localhost/cb",
                code_challenge="c" * 43,
                customer_id=customer.id,
                browser_session_id=None,
                scope="openid",
                legal_entity_id="acme",
                nonce=None,
                auth_time=utcnow(),
            )
        )
    barrier = threading.Barrier(THREADS)
    results = [None] * THREADS

    def exchange(i: int) -> None:
        with app.app_context():
            barrier.wait()
            results[i] = _store(app).consume_code(code, f"sid_{i}", utcnow())

    threads = [threading.Thread(target=exchange, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    consumed = [row for row, first in results if first]
    assert len(consumed) == 1
    winner = next(i for i, (_, first) in enumerate(results) if first)
    # Every replay sees the family the one exchange recorded: the one to revoke.
    assert {row.session_id for row, _ in results} == {f"sid_{winner}"}
    with app.app_context():
        assert _store(app).consume_code("not-a-code", "sid_x", utcnow()) == (None, False)


def test_an_audit_event_on_its_own_is_committed(app):
    with app.app_context():
        _store(app).record("login.failed", actor_type="client", actor_id="storefront")
        db.session.rollback()  # what the caller does next cannot undo it
    with app.app_context():
        count = db.session.scalar(select(func.count()).where(AuditEvent.action == "login.failed"))
    assert count == 1


def _is_closed(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except Exception:  # psycopg's OperationalError, sqlite3's ProgrammingError
        return True
    return False


def test_each_thread_has_one_connection_of_its_own_closed_when_the_thread_ends(app):
    """connections.py: one connection per thread, the same on every call, outside the pool,
    and closed as its thread ends (nothing holds it but the thread)."""
    sessions = _store(app)
    opened = []

    def work() -> None:
        with app.app_context():
            sessions.session_state("sid_nobody", None)
            held = sessions._connections.get()
            sessions.load_refresh(hash_token("nothing"))
            assert sessions._connections.get() is held
            opened.append(held.conn)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert len({id(conn) for conn in opened}) == 3
    assert all(_is_closed(conn) for conn in opened)
    with app.app_context():
        assert db.engine.pool.checkedout() == 0


def test_a_slots_connection_serves_each_thread_that_holds_the_slot(app):
    """Served, a request runs in one of the worker's slots (token_service/slots.py), on
    whichever of the server's threads: the slot's connection outlives the thread, so a worker
    holds one per slot however many threads come and go."""
    sessions = _store(app)
    gate = Slots(1)
    used = []

    def request() -> None:
        gate.enter()
        try:
            with app.app_context():
                sessions.session_state("sid_nobody", None)
                used.append(sessions._connections.get().conn)
        finally:
            gate.leave()

    for _ in range(3):  # one thread after another, each gone before the next
        worker = threading.Thread(target=request)
        worker.start()
        worker.join(timeout=30)
    assert len(used) == 3 and len({id(conn) for conn in used}) == 1
    assert not _is_closed(used[0])  # the threads ended; the slot's connection stays open


def test_disposing_the_engine_closes_the_threads_connections_and_the_next_call_reopens(app):
    sessions = _store(app)
    with app.app_context():
        held = sessions._connections.get()
        assert not _is_closed(held.conn)
        db.engine.dispose()
        assert held.closed and _is_closed(held.conn)
        assert sessions.session_state("sid_nobody", None) is None  # on a new connection
        assert sessions._connections.get() is not held


def test_a_write_the_database_refuses_is_sqlalchemys_error_and_writes_nothing(app):
    """A lock held too long elsewhere (SQLite's one writer; the customer's row on PostgreSQL):
    the driver's error comes out as SQLAlchemy's DBAPIError, which the front answers with 503,
    and the token stays as it was."""
    _, first, customer = _start(app)
    with app.app_context():
        found = _store(app).load_refresh(first)[0]
        own = _store(app)._connections.get().conn
        other = db.engine.raw_connection()
        try:
            if app.backend == "postgres":
                own.execute("SET lock_timeout = '50ms'")
                other.cursor().execute(
                    "SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (customer.id,)
                )
            else:
                own.execute("PRAGMA busy_timeout = 50")
                other.driver_connection.execute("BEGIN IMMEDIATE")
            with pytest.raises(DBAPIError):
                _store(app).rotate(_rotation(found, hash_token("refused"), "globex"))
        finally:
            other.rollback()
            other.close()
            own.execute(
                "RESET lock_timeout" if app.backend == "postgres" else "PRAGMA busy_timeout = 10000"
            )
        after = _store(app).load_refresh(first)[0]
    assert after.consumed_at is None and after.legal_entity_id == "acme"
