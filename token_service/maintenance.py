"""Housekeeping that is safe to run while serving: pruning dead sessions and spent tokens.

Deletes in small batches, each its own short transaction, so that the token endpoint never
waits long on a lock. A consumed refresh token is evidence for reuse detection for as long as
its session lives, so by default only whole dead sessions go (expired or revoked, with all
their tokens); `consumed_older_than` also prunes long-consumed tokens of live sessions, at the
price of detecting their replay as an unknown token (still refused, but the session survives).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import click
from flask.cli import with_appcontext
from sqlalchemy import delete, select

from . import backchannel
from .extensions import db
from .models import RefreshToken, Session, utcnow
from .oauth2 import browser, codes


@dataclass
class PruneResult:
    sessions: int = 0
    tokens: int = 0
    batches: int = 0
    codes: int = 0  # authorization codes
    browser_sessions: int = 0
    backchannel_logouts: int = 0  # delivered (or given up on) logout tokens


def prune(
    *,
    batch_size: int = 1000,
    keep_dead_for: timedelta = timedelta(days=1),
    consumed_older_than: timedelta | None = None,
    max_batches: int | None = None,
    progress=None,
) -> PruneResult:
    """Delete dead sessions (and their tokens) and, optionally, long-consumed tokens.

    Each batch reads its ids once and deletes exactly those: dead sessions through the index
    of each way to die (one range scan each, never a table scan that rereads what earlier
    batches cleared), long-consumed tokens session by session in key order. The cost is
    linear in what is deleted, or, for consumed tokens, in the number of sessions."""
    result = PruneResult()

    def batch_done(sessions: int, tokens: int) -> None:
        db.session.commit()
        result.sessions += sessions
        result.tokens += tokens
        result.batches += 1
        if progress:
            progress(result)

    def more() -> bool:
        return max_batches is None or result.batches < max_batches

    cutoff = utcnow() - keep_dead_for
    while more() and (ids := _dead_sessions(cutoff, batch_size)):
        tokens = db.session.execute(
            delete(RefreshToken).where(RefreshToken.session_id.in_(ids))
        ).rowcount
        sessions = db.session.execute(delete(Session).where(Session.id.in_(ids))).rowcount
        batch_done(sessions, tokens)
    if consumed_older_than is not None:
        consumed_cutoff = utcnow() - consumed_older_than
        after = ""
        while more():
            ids = db.session.scalars(
                select(Session.id).where(Session.id > after).order_by(Session.id).limit(batch_size)
            ).all()
            if not ids:
                break
            after = ids[-1]
            tokens = db.session.execute(
                delete(RefreshToken).where(
                    RefreshToken.session_id.in_(ids), RefreshToken.consumed_at < consumed_cutoff
                )
            ).rowcount
            batch_done(0, tokens)
    # The front door's rows, once dead: codes after their session (pruned just above).
    while more() and (count := codes.prune_dead_codes(cutoff, batch_size)):
        result.codes += count
        batch_done(0, 0)
    while more() and (count := browser.prune_dead_browser_sessions(cutoff, batch_size)):
        result.browser_sessions += count
        batch_done(0, 0)
    while more() and (count := backchannel.prune_done(cutoff, batch_size)):
        result.backchannel_logouts += count
        batch_done(0, 0)
    db.session.commit()
    return result


def _dead_sessions(cutoff, limit: int) -> list[str]:
    """Up to `limit` ids of sessions dead since before `cutoff`: expired, idle or revoked."""
    ids: dict[str, None] = {}
    for column in (Session.expires_at, Session.idle_expires_at, Session.revoked_at):
        if len(ids) >= limit:
            break
        found = db.session.scalars(
            select(Session.id).where(column < cutoff).order_by(column).limit(limit - len(ids))
        )
        ids.update(dict.fromkeys(found))
    return list(ids)


@click.command("prune")
@click.option("--batch-size", default=1000, show_default=True)
@click.option(
    "--keep-dead-days",
    default=1.0,
    show_default=True,
    help="Keep expired or revoked sessions this long (for the admin's session list).",
)
@click.option(
    "--consumed-older-than-days",
    type=float,
    default=None,
    help="Also prune tokens of live sessions consumed this long ago.",
)
@with_appcontext
def prune_command(batch_size: int, keep_dead_days: float, consumed_older_than_days) -> None:
    """Delete dead sessions and spent refresh tokens, in batches (safe while serving)."""
    consumed = (
        timedelta(days=consumed_older_than_days) if consumed_older_than_days is not None else None
    )

    def show(r: PruneResult) -> None:
        click.echo(f"\rbatches {r.batches}: {r.sessions} sessions, {r.tokens} tokens", nl=False)

    result = prune(
        batch_size=batch_size,
        keep_dead_for=timedelta(days=keep_dead_days),
        consumed_older_than=consumed,
        progress=show,
    )
    click.echo(
        f"\npruned {result.sessions} sessions and {result.tokens} refresh tokens, "
        f"{result.codes} authorization codes, {result.browser_sessions} browser sessions, "
        f"{result.backchannel_logouts} back-channel logouts"
    )
