"""Benchmark `token_service.maintenance.prune` on a large refresh_tokens table, and check that
the database keeps serving while it runs.

Creates (drops first) a scratch PostgreSQL database, migrates it, loads the demo, then COPYs
sessions (a share of them dead: expired or revoked two days ago and more) with their chains of
refresh tokens (all consumed but the last), interleaved as rotations over time would leave
them. After VACUUM ANALYZE it runs prune() in the app context, timing each batch (prune's
`progress` callback), while another connection every 50 ms consumes a live token and reads a
live session (rolled back), as the token endpoint would. One JSON line per phase on stdout.

    .venv/bin/python bench/prune.py [--sessions 1000000] [--tokens-per-session 10]
        [--dead-share 0.6] [--batch-size 1000] [--database bench_prune] [--keep-database]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from growth import Progress, plain_url

from token_service import create_app
from token_service.config import Settings
from token_service.database import upgrade
from token_service.demo import load_demo
from token_service.extensions import db
from token_service.kv import MemoryStore
from token_service.maintenance import PruneResult, prune
from token_service.services.catalogue import seed_catalogue

LIVE, EXPIRED, REVOKED = 0, 1, 2
CUSTOMERS = ("cus_alice", "cus_bob")
ROTATION = timedelta(minutes=30)  # between two refreshes of one session


def session_id(n: int) -> str:
    """Random-looking like the service's own ids, so that the index is as scattered."""
    return "sid_" + hashlib.blake2b(n.to_bytes(8, "big"), digest_size=12).hexdigest()


def token_hash(i: int) -> str:
    return hashlib.sha256(b"bench-token-%d" % i).hexdigest()


def create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load(url: str, sessions: int, per_session: int, dead_share: float, seed: int) -> dict:
    """COPY the sessions and their token chains; returns what was made and a sample of live
    sessions and tokens for the probe."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    day = timedelta(days=1)
    kinds = bytearray(sessions)
    last_used: list[datetime] = [now] * sessions
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT scope FROM clients WHERE client_id = 'storefront'")
        (scope,) = cur.fetchone()
        bar = Progress("sessions", sessions)
        columns = (
            "id, customer_id, client_id, scope, legal_entity_id, auth_time, created_at,"
            " last_used_at, idle_expires_at, expires_at, revoked_at, revoked_reason"
        )
        with cur.copy(f"COPY sessions ({columns}) FROM STDIN") as copy:
            for n in range(sessions):
                # Spread over time: identical timestamps would make the indexes unrealistically
                # small (deduplicated) and the planner's estimates unrealistically sharp.
                jitter = timedelta(seconds=rng.random() * 86400)
                revoked_at = reason = None
                if rng.random() < dead_share:
                    if rng.random() < 0.5:  # expired (absolute lifetime) two days ago or more
                        kind = EXPIRED
                        expires = now - 2 * day - jitter
                        created = expires - 30 * day
                        used = expires - day
                        idle = expires
                    else:  # logged out two days ago or more, otherwise still valid
                        kind = REVOKED
                        created = now - 10 * day - jitter
                        used = revoked_at = now - 2 * day - jitter
                        idle, expires, reason = used + 7 * day, created + 30 * day, "logout"
                else:
                    kind = LIVE
                    created = now - 10 * day - jitter
                    used = now - jitter / 24
                    idle, expires = used + 7 * day, created + 30 * day
                kinds[n], last_used[n] = kind, used
                copy.write_row(
                    (
                        session_id(n),
                        CUSTOMERS[n % 2],
                        "storefront",
                        scope,
                        "acme",
                        created,
                        created,
                        used,
                        idle,
                        expires,
                        revoked_at,
                        reason,
                    )
                )
                if n % 1000 == 999:
                    bar.add(1000)
            bar.add(sessions % 1000)
        bar.finish()

        # Token r of session n is number r * sessions + n: round by round, as rotations
        # interleave over time, so a session's tokens lie on different pages.
        bar = Progress("refresh_tokens", sessions * per_session)
        back = [ROTATION * (per_session - 1 - r) for r in range(per_session)]
        for r in range(per_session):
            last = r == per_session - 1
            with cur.copy(
                "COPY refresh_tokens (token_hash, session_id, successor_hash, legal_entity_id,"
                " created_at, consumed_at) FROM STDIN"
            ) as copy:
                for n in range(sessions):
                    i = r * sessions + n
                    created = last_used[n] - back[r]
                    if last:
                        copy.write_row((token_hash(i), session_id(n), None, "acme", created, None))
                    else:
                        successor = token_hash(i + sessions)
                        consumed = created + ROTATION
                        copy.write_row(
                            (token_hash(i), session_id(n), successor, "acme", created, consumed)
                        )
                    if n % 1000 == 999:
                        bar.add(1000)
                bar.add(sessions % 1000)
            conn.commit()  # one COPY per round: its foreign-key checks run at its end
        bar.finish()

    live = [n for n in range(sessions) if kinds[n] == LIVE]
    sample = rng.sample(live, min(1000, len(live)))
    base = (per_session - 1) * sessions
    return {
        "sessions": sessions,
        "tokens": sessions * per_session,
        "dead_sessions": sessions - len(live),
        "probe": [(session_id(n), token_hash(base + n)) for n in sample],
    }


def percentiles(values: list[float]) -> dict:
    """n, p50, p99 and max of durations in seconds, reported in milliseconds."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def mean_ms(values: list[float]) -> float | None:
    return round(1000 * statistics.fmean(values), 2) if values else None


class Probe(threading.Thread):
    """Every `interval` s, what a refresh does to the rows it touches: consume a live token,
    read its session; rolled back. Records each round trip's duration."""

    def __init__(self, url: str, pairs: list[tuple[str, str]], interval: float) -> None:
        super().__init__(daemon=True)
        self.url, self.pairs, self.interval = url, pairs, interval
        self.samples: list[tuple[float, float]] = []  # (started, seconds)
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(self.url) as conn, conn.cursor() as cur:
                while not self.stop.is_set():
                    sid, token = rng.choice(self.pairs)
                    start = time.perf_counter()
                    cur.execute(
                        "UPDATE refresh_tokens SET consumed_at = now() WHERE token_hash = %s",
                        (token,),
                    )
                    assert cur.rowcount == 1, "probe token is gone"
                    cur.execute("SELECT id, revoked_at FROM sessions WHERE id = %s", (sid,))
                    assert cur.fetchone() is not None, "probe session is gone"
                    conn.rollback()
                    took = time.perf_counter() - start
                    self.samples.append((start, took))
                    self.stop.wait(max(0.0, self.interval - took))
        except BaseException as exc:
            self.error = exc

    def between(self, start: float, end: float) -> list[float]:
        return [took for at, took in self.samples if start <= at < end]


def prune_consumed(app, url: str, older_than: timedelta):
    """The second phase: tokens of live sessions consumed `older_than` ago, session by session."""
    tokens_before = count(url)["tokens"]
    ends: list[float] = []
    with app.app_context():
        start = time.perf_counter()
        result = prune(
            consumed_older_than=older_than, progress=lambda r: ends.append(time.perf_counter())
        )
        end = time.perf_counter()
    batches = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    return tokens_before, result, start, end, batches


def count(url: str) -> dict:
    with psycopg.connect(url) as conn:
        sessions, tokens, dead = conn.execute(
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM refresh_tokens),"
            " (SELECT count(*) FROM sessions WHERE expires_at < now() - interval '1 day'"
            "  OR idle_expires_at < now() - interval '1 day'"
            "  OR revoked_at < now() - interval '1 day')"
        ).fetchone()
    return {"sessions": sessions, "tokens": tokens, "dead_sessions": dead}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="bench_prune")
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--tokens-per-session", type=int, default=10)
    parser.add_argument("--dead-share", type=float, default=0.6)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--max-batches", type=int, default=None, help="stop prune early")
    parser.add_argument("--probe-interval", type=float, default=0.05)
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--synchronize-seqscans",
        choices=("on", "off"),
        default=None,
        help="set it for the scratch database (default: the server's). A server whose"
        " shared_buffers is over 4x the sessions table never synchronizes its scans: 'off'",
    )
    parser.add_argument("--keep-database", action="store_true", help="do not drop it at the end")
    parser.add_argument(
        "--consumed-older-than-hours",
        type=float,
        default=None,
        help="then also prune live sessions' tokens consumed this long ago (a second phase)",
    )
    args = parser.parse_args(argv)
    if args.tokens_per_session < 1 or not 0 <= args.dead_share <= 1:
        parser.error("--tokens-per-session must be >= 1 and --dead-share within [0, 1]")

    admin_url = plain_url(args.admin_url)
    url = create_database(admin_url, args.database)
    if args.synchronize_seqscans:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                f'ALTER DATABASE "{args.database}" SET synchronize_seqscans = '
                f"{args.synchronize_seqscans}"
            )
    keys = tempfile.mkdtemp(prefix="bench-prune-keys-")
    settings = replace(
        Settings.from_env({"DATABASE_URL": url}), keys_dir=Path(keys), redis_url=None
    )
    app = create_app({"SETTINGS": settings, "STORE": MemoryStore()})
    try:
        with app.app_context():
            upgrade(db.engine)
            seed_catalogue()
            load_demo()
            db.session.commit()

        start = time.perf_counter()
        made = load(url, args.sessions, args.tokens_per_session, args.dead_share, args.seed)
        loaded = time.perf_counter() - start
        sys.stderr.write("VACUUM ANALYZE\n")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) sessions, refresh_tokens")
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('refresh_tokens')),"
                " pg_size_pretty(pg_total_relation_size('sessions'))"
            ).fetchone()
        before = count(url)
        emit(
            {
                "phase": "load",
                "sessions": made["sessions"],
                "tokens": made["tokens"],
                "dead_sessions": made["dead_sessions"],
                "load_seconds": round(loaded, 1),
                "vacuum_analyze_seconds": round(time.perf_counter() - start - loaded, 1),
                "refresh_tokens_size": size[0],
                "sessions_size": size[1],
            }
        )

        probe = Probe(url, made["probe"], args.probe_interval)
        probe.start()
        time.sleep(args.baseline_seconds)  # the probe's latency on an idle database

        ends: list[float] = []
        bar = Progress("prune sessions", before["dead_sessions"])

        def progress(result: PruneResult) -> None:
            ends.append(time.perf_counter())
            bar.add(result.sessions - bar.done)

        with app.app_context():
            prune_start = time.perf_counter()
            result = prune(
                batch_size=args.batch_size, max_batches=args.max_batches, progress=progress
            )
            prune_end = time.perf_counter()
        bar.finish()
        after = count(url)
        consumed_phase = None
        if args.consumed_older_than_hours is not None:
            consumed_phase = prune_consumed(
                app, url, timedelta(hours=args.consumed_older_than_hours)
            )
        time.sleep(min(1.0, args.baseline_seconds))
        probe.stop.set()
        probe.join()
        if probe.error:
            raise probe.error

        seconds = prune_end - prune_start
        batches = [b - a for a, b in zip([prune_start, *ends], ends, strict=False)]
        tenth = max(1, len(batches) // 10)
        # Counted in the tables, not taken from prune's result: tokens that the ON DELETE
        # CASCADE of a session removes are missing from its count.
        tokens = before["tokens"] - after["tokens"]
        sessions = before["sessions"] - after["sessions"]
        emit(
            {
                "phase": "prune",
                "rows_before": before["tokens"],
                "sessions_before": before["sessions"],
                "tokens_deleted": tokens,
                "sessions_deleted": sessions,
                "seconds": round(seconds, 2),
                "rows_per_s": round((tokens + sessions) / seconds),
                "tokens_per_s": round(tokens / seconds),
                "batches": result.batches,
                "batch_size": args.batch_size,
                "synchronize_seqscans": args.synchronize_seqscans or "server default",
                "batch": percentiles(batches),
                "first_tenth_mean_ms": mean_ms(batches[:tenth]),
                "last_tenth_mean_ms": mean_ms(batches[-tenth:]),
                "prune_reported": {"sessions": result.sessions, "tokens": result.tokens},
            }
        )
        emit(
            {
                "phase": "probe",
                "what": "UPDATE one live refresh token + SELECT its session, rolled back",
                "interval_ms": round(1000 * args.probe_interval),
                "idle": percentiles(probe.between(0, prune_start)),
                "during_prune": percentiles(probe.between(prune_start, prune_end)),
            }
        )
        if consumed_phase is not None:
            tokens_before, result, start, end, batches = consumed_phase
            emit(
                {
                    "phase": "prune_consumed",
                    "older_than_hours": args.consumed_older_than_hours,
                    "tokens_before": tokens_before,
                    "tokens_deleted": tokens_before - count(url)["tokens"],
                    "seconds": round(end - start, 2),
                    "tokens_per_s": round(result.tokens / (end - start)),
                    "batches": result.batches,
                    "batch": percentiles(batches),
                    "first_tenth_mean_ms": mean_ms(batches[: max(1, len(batches) // 10)]),
                    "last_tenth_mean_ms": mean_ms(batches[-max(1, len(batches) // 10) :]),
                    "probe_during": percentiles(probe.between(start, end)),
                }
            )
        emit({"phase": "after", **count(url)})
        with app.app_context():
            db.engine.dispose()
    finally:
        shutil.rmtree(keys, ignore_errors=True)
        if not args.keep_database:
            with app.app_context():
                db.engine.dispose()
            drop_database(admin_url, args.database)


if __name__ == "__main__":
    main()
