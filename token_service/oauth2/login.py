"""The one check of a customer's email and password, for the password grant and the hosted
login page alike: throttling, one argon2id verification whatever the failure, one answer for
every failure (no account enumeration), the audit events, a rehash when the parameters rose."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidGrantError

from ..entitlements import Entitlements
from ..inputs import email_key
from ..security import PASSWORD_HASHER, hash_password, verify_password
from ..throttle import LoginThrottle, TooManyAttempts
from .sessions import LoginRow, SessionStore


def check_credentials(
    sessions: SessionStore,
    throttle: LoginThrottle | None,
    username: str,
    password: str,
    address: str | None,
    client_id: str,
) -> tuple[LoginRow, Entitlements]:
    """The active customer with these credentials and their entitlements.

    Raises TooManyAttempts (429) while the account or address is locked, InvalidGrantError
    ("Invalid username or password.") for an unknown email, a wrong password or a blocked
    customer alike. A failure's audit event is committed: it must outlive the error.
    """
    on_record = False
    if throttle is not None:
        try:
            on_record = throttle.check(username, address)
        except TooManyAttempts:
            sessions.record(
                "login.throttled",
                actor_type="client",
                actor_id=client_id,
                target=email_key(username) or username.strip().lower(),
                address=address,
            )
            raise

    customer, entitlements = sessions.find_login(username) or (None, None)
    # Unknown email, wrong password, blocked customer: one answer, one argon2id verification.
    valid = verify_password(customer.password_hash if customer else None, password)
    if not valid or customer.status != "active":
        if throttle is not None:
            throttle.failed(username, address)
        sessions.record(
            "login.failed",
            actor_type="client",
            actor_id=client_id,
            customer_id=customer.id if customer else None,
            reason="blocked" if valid else "credentials",
        )
        raise InvalidGrantError("Invalid username or password.")
    if throttle is not None:
        throttle.succeeded(username, address, on_record)
    if PASSWORD_HASHER.check_needs_rehash(customer.password_hash):
        sessions.set_password_hash(customer.id, hash_password(password))
    return customer, entitlements
