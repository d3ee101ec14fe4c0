"""The login throttle cannot tell a known account from an unknown one (issue 15, defect 12):
it keys on the normalized identifier the client sent, and answers alike, whether or not an
account has it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from token_service.extensions import db
from token_service.models import AuditEvent
from token_service.throttle import _keys


def wrong_passwords(storefront, username: str, times: int = 8) -> list[tuple[int, str, bool]]:
    answers = []
    for _ in range(times):
        r = storefront.login(username, password="wrong")
        answers.append((r.status_code, r.json["error"], "Retry-After" in r.headers))
    return answers


def test_known_and_unknown_accounts_are_throttled_alike(app, storefront):
    free = app.config["SETTINGS"].login_throttle_free_attempts
    expected = [(400, "invalid_grant", False)] * (free + 1) + [(429, "slow_down", True)] * 2
    assert wrong_passwords(storefront, "bob@acme.test") == expected
    assert wrong_passwords(storefront, "nobody@acme.test") == expected
    assert wrong_passwords(storefront, "x" * 300 + "@nowhere.test") == expected


@pytest.mark.parametrize("variant", ["BOB@acme.test", " bob@acme.test", "Bob@Acme.Test "])
def test_the_key_is_the_normalized_identifier(app, storefront, variant):
    """Spelling variants of one identifier share its counter, whether an account has it or not:
    an attacker gets no extra attempts by changing case or padding."""
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free + 1):
        assert storefront.login("bob@acme.test", password="wrong").status_code == 400
    assert storefront.login(variant, password="wrong").status_code == 429
    assert _keys(variant, None) == _keys("bob@acme.test", None)


def test_the_answers_are_byte_identical(app, storefront):
    """Same status, body and headers for a wrong password and an unknown email, throttled or
    not: nothing in the answer depends on whether the account exists."""
    free = app.config["SETTINGS"].login_throttle_free_attempts

    def shape(username):
        seen = []
        for _ in range(free + 2):
            r = storefront.login(username, password="wrong")
            varying = ("Content-Length", "X-Request-Id")  # the request id is new per answer
            headers = {k: v for k, v in r.headers.items() if k not in varying}
            seen.append((r.status_code, r.get_data(), sorted(headers.items())))
        return seen

    assert shape("alice@acme.test") == shape("ghost@acme.test")


def test_unknown_and_known_failures_are_audited_alike(app, storefront):
    storefront.login("bob@acme.test", password="wrong")
    storefront.login("ghost@acme.test", password="wrong")
    with app.app_context():
        count = db.session.scalar(select(func.count()).where(AuditEvent.action == "login.failed"))
    assert count == 2
