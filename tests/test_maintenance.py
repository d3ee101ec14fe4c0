"""Pruning dead sessions and spent refresh tokens, in batches, without touching live ones."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from token_service.extensions import db
from token_service.maintenance import prune
from token_service.models import RefreshToken, Session, utcnow


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_prune_removes_only_dead_sessions(app, storefront):
    live = storefront.login()
    live = storefront.refresh(live.json["refresh_token"])  # one consumed token in a live session
    dead = [storefront.login("bob@acme.test") for _ in range(5)]
    assert all(r.status_code == 200 for r in dead)
    with app.app_context():
        long_ago = utcnow() - timedelta(days=2)
        sids = list(db.session.scalars(select(Session.id).order_by(Session.created_at)))[1:]
        db.session.execute(
            db.update(Session).where(Session.id.in_(sids[:3])).values(expires_at=long_ago)
        )
        db.session.execute(
            db.update(Session).where(Session.id.in_(sids[3:])).values(revoked_at=long_ago)
        )
        db.session.commit()
        result = prune(batch_size=2)
    assert (result.sessions, result.tokens) == (5, 5)
    assert result.batches == 3  # 2 + 2 + 1
    assert count(app, Session) == 1
    assert count(app, RefreshToken) == 2
    # The live session's chain and its reuse evidence are intact.
    assert storefront.refresh(live.json["refresh_token"]).status_code == 200


def test_prune_consumed_tokens_on_request(app, storefront):
    login = storefront.login()
    current = storefront.refresh(
        storefront.refresh(login.json["refresh_token"]).json["refresh_token"]
    )
    with app.app_context():
        db.session.execute(
            db.update(RefreshToken)
            .where(RefreshToken.consumed_at.is_not(None))
            .values(consumed_at=utcnow() - timedelta(days=40))
        )
        db.session.commit()
        assert prune().tokens == 0  # by default consumed tokens of live sessions stay
        result = prune(consumed_older_than=timedelta(days=30))
    assert result.tokens == 2
    assert storefront.refresh(current.json["refresh_token"]).status_code == 200
