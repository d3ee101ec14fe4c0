"""Audit events fit their columns whatever a caller passes (issue 15, defect 7): a value too
long for its column keeps a prefix and a digest, never fails the insert on either backend."""

from __future__ import annotations

from sqlalchemy import select

from token_service import audit
from token_service.extensions import db
from token_service.models import AuditEvent


def events(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == action))
        return [row for row in rows]


def test_throttled_login_with_a_long_username_is_429(app, storefront):
    """Was 503 on PostgreSQL: the 300-character username overflowed `target` varchar(255)."""
    username = "x" * 290 + "@acme.test"
    free = app.config["SETTINGS"].login_throttle_free_attempts
    for _ in range(free + 1):
        assert storefront.login(username, password="wrong").status_code == 400
    throttled = storefront.login(username, password="wrong")
    assert throttled.status_code == 429, throttled.get_data(as_text=True)
    assert throttled.json["error"] == "slow_down"
    assert int(throttled.headers["Retry-After"]) >= 1
    (event,) = events(app, "login.throttled")
    assert len(event.target) <= 255
    assert event.target.startswith("x" * 200)


def test_every_column_is_fitted(app):
    """Each column gets more than it holds, and a NUL (which PostgreSQL text refuses)."""
    with app.app_context():
        audit.record(
            "a" * 100,
            actor_type="t" * 40,
            actor_id="i" * 300,
            customer_id="c\x00" * 100,
            target="g" * 1000,
            note="n" * 5000,
            many=["m" * 2000] * 500,
        )
        db.session.commit()
    (row,) = events(app, audit.fit("a" * 100, 64))
    assert len(row.actor_type) <= 16
    assert len(row.actor_id) <= 128
    assert len(row.customer_id) <= 64 and "\x00" not in row.customer_id
    assert len(row.target) <= 255
    assert len(row.details["note"]) <= audit.DETAIL_LENGTH
    assert len(row.details["many"]) <= audit.MAX_DETAIL_ITEMS
    assert all(len(item) <= audit.DETAIL_LENGTH for item in row.details["many"])


def test_fitted_values_stay_distinct_and_stable():
    a, b = "p" * 300 + "a", "p" * 300 + "b"
    assert audit.fit(a, 255) != audit.fit(b, 255)
    assert audit.fit(a, 255) == audit.fit(a, 255)
    assert len(audit.fit(a, 255)) == 255 and len(audit.fit(a, 16)) == 16
    assert audit.fit("short", 255) == "short"
