"""`SessionStore`: the interface of the protocol code's storage, and what both backends share.

The abstract methods are each backend's hot statements (postgres.py, sqlite.py); the rest is
off the hot paths and written once here, on the ORM session (the request's transaction).
Every operation commits what it writes before it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from ... import audit, revocation
from ...clients import ClientInfo, load_client
from ...entitlements import Entitlements
from ...extensions import db
from ...inputs import email_key
from ...models import AuthorizationCode, Customer, Session, utcnow
from ...security import hash_token, new_token
from .rows import CodeRow, LoginRow, NewCode, NewSession, RefreshRow, Rotation, SessionState

#: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED" (RFC 6749 §4.1.2); a
#: browser redirect and a back-channel exchange take a second or two, so one minute is plenty.
CODE_SECONDS = 60

#: The audit table's columns, in the order the backends' statements insert them.
AUDIT_COLUMNS = (
    "at",
    "actor_type",
    "actor_id",
    "action",
    "customer_id",
    "target",
    "legal_entity_id",
    "details",
)

_CODE_COLUMNS = [getattr(AuthorizationCode, name) for name in CodeRow._fields]


class _Committed:
    """The ORM session's transaction, committed on the way out, rolled back on an error."""

    def __enter__(self):
        return db.session

    def __exit__(self, kind, error, trace):
        if kind is None:
            db.session.commit()
        else:
            db.session.rollback()


class SessionStore(ABC):
    """Every storage operation of the protocol code. Each commits what it writes."""

    # -- the backends' hot statements ------------------------------------------------------

    @abstractmethod
    def _login(self, by: str, key: str) -> tuple[LoginRow, Entitlements] | None:
        """The customer whose `by` ("email" or "id") is `key`, and their entitlements."""

    @abstractmethod
    def start_session(
        self, session: NewSession, token_hash: str, entitlements_version: int
    ) -> None:
        """Insert the session, its first refresh token and the `login.succeeded` event.
        Raises Superseded (nothing written) if the entitlements moved or the customer is gone."""

    @abstractmethod
    def load_refresh(self, token_hash: str) -> tuple[RefreshRow, Entitlements] | None:
        """A refresh token with its session, its customer's status and entitlements."""

    @abstractmethod
    def rotate(self, rotation: Rotation) -> bool:
        """Consume the presented token, insert its successor, move the session and, on a
        switch, write `session.switched`: all or nothing. False if the token was consumed
        already (a concurrent refresh won); Superseded (nothing written) if the entitlements
        moved."""

    @abstractmethod
    def session_state(self, sid: str, legal_entity_id: str | None) -> SessionState | None:
        """What introspection must know of a session, in one round trip."""

    # -- clients and customers -------------------------------------------------------------

    def load_client(self, client_id: str) -> ClientInfo | None:
        return load_client(client_id)

    def find_login(self, email: str) -> tuple[LoginRow, Entitlements] | None:
        """The customer of a login and their entitlements. Emails are stored normalized
        (inputs.normalize_email); one that cannot be is nobody's, and is not looked up."""
        key = email_key(email)
        return None if key is None else self._login("email", key)

    def load_customer(self, customer_id: str) -> tuple[LoginRow, Entitlements] | None:
        return self._login("id", customer_id)

    def set_password_hash(self, customer_id: str, password_hash: str) -> None:
        """A stronger hash of the same password (argon2id parameters raised since it was set)."""
        with _Committed() as session:
            session.execute(
                update(Customer)
                .where(Customer.id == customer_id)
                .values(password_hash=password_hash)
            )

    # -- refresh-token families ------------------------------------------------------------

    def revoke_family(
        self,
        session_id: str | None,
        reason: str,
        *,
        actor_type: str,
        actor_id: str | None,
        event: tuple[str, dict] | None = None,
    ) -> None:
        """Revoke a session and deny-list its access tokens, audited (`session.revoked`, and
        `event` as (action, fields) beside it): the admin API's revocation, committed."""
        with _Committed() as session:
            row = session.get(Session, session_id) if session_id else None
            if row is not None:
                revocation.revoke_session(row, reason, actor_type=actor_type, actor_id=actor_id)
            if event is not None:
                action, fields = event
                audit.record(action, **fields)

    # -- authorization codes ---------------------------------------------------------------

    def store_code(self, code: NewCode) -> str:
        """Store a new code's hash and what it is bound to; returns the code (shown once)."""
        value = new_token()
        now = utcnow()
        with _Committed() as session:
            session.execute(
                insert(AuthorizationCode).values(
                    code_hash=hash_token(value),
                    created_at=now,
                    expires_at=now + timedelta(seconds=CODE_SECONDS),
                    **code._asdict(),
                )
            )
        return value

    def consume_code(
        self, code: str, session_id: str, now: datetime
    ) -> tuple[CodeRow | None, bool]:
        """Consume a code at most once, recording the family about to be issued from it:
        (row, True) to the one caller that consumed it; (row, False) for a replay; (None,
        False) for an unknown code. One UPDATE ... WHERE consumed_at IS NULL decides."""
        code_hash = hash_token(code)
        with _Committed() as session:
            row = session.execute(
                update(AuthorizationCode)
                .where(
                    AuthorizationCode.code_hash == code_hash,
                    AuthorizationCode.consumed_at.is_(None),
                )
                .values(consumed_at=now, session_id=session_id)
                .returning(*_CODE_COLUMNS)
            ).first()
            if row is not None:
                return CodeRow(*row), True
            row = session.execute(
                select(*_CODE_COLUMNS).where(AuthorizationCode.code_hash == code_hash)
            ).first()
        return (CodeRow(*row) if row else None), False

    # -- audit and deny-list ---------------------------------------------------------------

    def record(self, action: str, **fields) -> None:
        """An audit event on its own (a failed login, a revoked access token), committed."""
        with _Committed():
            audit.record(action, **fields)

    def is_denied(self, sid: str | None, jti: str, iat: int) -> bool:
        """True if this access token was revoked. Raises StoreUnavailable: callers fail closed."""
        return revocation.is_denied(sid, jti, iat)

    def deny_access_token(self, jti: str, ttl: int, reason: str) -> bool:
        """Deny-list one access token until it expires; False if the store is down."""
        return revocation.deny_access_token(jti, ttl, reason)


def session_event(change: NewSession | Rotation) -> dict:
    """The audit row a backend writes with a new session (`login.succeeded`) or with a
    rotation that switched entity (`session.switched`)."""
    if isinstance(change, Rotation):
        action, target = "session.switched", change.session_id
        details = {"previous": change.previous_entity}
    else:
        action, target, details = "login.succeeded", change.id, {"client_id": change.client_id}
    return audit.row(
        action,
        actor_type="customer",
        actor_id=change.customer_id,
        customer_id=change.customer_id,
        target=target,
        legal_entity_id=change.legal_entity_id,
        **details,
    )
