"""Of concurrent refreshes with one token, exactly one rotates it (DESIGN §4), on real backends."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from token_service.extensions import db
from token_service.models import RefreshToken

THREADS = 8


def _race(app, params: list[dict]) -> list:
    """POST every params dict at once, one thread and one test client each."""
    barrier = threading.Barrier(len(params))
    results = [None] * len(params)

    def run(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        results[i] = client.post("/oauth/token", data=params[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(params))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def _tokens_in_session_of(app, token_hash) -> int:
    with app.app_context():
        sid = db.session.scalar(
            select(RefreshToken.session_id).where(RefreshToken.token_hash == token_hash)
        )
        return db.session.scalar(select(func.count()).where(RefreshToken.session_id == sid))


@pytest.mark.parametrize("entities", [False, True], ids=["same-params", "different-entities"])
def test_exactly_one_rotation(app, storefront, entities):
    from token_service.security import hash_token

    token = storefront.login().json["refresh_token"]
    params = [
        {
            "grant_type": "refresh_token",
            "client_id": "storefront",
            "refresh_token": token,
            **({"legal_entity_id": ["acme", "globex"][i % 2]} if entities else {}),
        }
        for i in range(THREADS)
    ]
    results = _race(app, params)
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 400}, statuses
    # Exactly one successor exists in the database, whatever the others were told.
    assert _tokens_in_session_of(app, hash_token(token)) == 2
    successors = {r.json["refresh_token"] for r in results if r.status_code == 200}
    assert len(successors) == 1, "every 200 carries the one successor (grace replay)"
    if not entities:
        assert statuses.count(200) == THREADS  # same request again: same answer, nobody logged out
    else:
        assert 1 <= statuses.count(200) <= THREADS
        losers = [r.json for r in results if r.status_code == 400]
        assert all(body["error"] == "invalid_grant" for body in losers)
    # The session survives the race: the successor refreshes.
    assert storefront.refresh(successors.pop()).status_code == 200


def test_exactly_one_rotation_without_grace(app, storefront):
    """With the grace window off, exactly one request gets 200; the others are reuse, and
    strict reuse detection (RFC 6819 §5.2.2.3) ends the family."""
    from dataclasses import replace

    endpoint = app.extensions["token_endpoint"]
    original = endpoint.settings
    endpoint.settings = replace(original, refresh_grace_seconds=0)
    try:
        token = storefront.login().json["refresh_token"]
        params = [
            {"grant_type": "refresh_token", "client_id": "storefront", "refresh_token": token}
        ] * THREADS
        results = _race(app, params)
    finally:
        endpoint.settings = original
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * (THREADS - 1), statuses
    winner = next(r for r in results if r.status_code == 200)
    assert storefront.refresh(winner.json["refresh_token"]).json["error"] == "invalid_grant"
