"""Time one hot path in-process for several source trees, interleaved, each on a fresh database:
a before/after comparison that a loaded machine cannot skew much (rounds alternate the trees).

    .venv/bin/python bench/ab_hot_path.py
        [--load refresh_switch|refresh_openid|login|introspection]
        [--n 2000] [--rounds 3] [--backend postgresql|sqlite] [--pg-setting KEY=VALUE]
        [--metric ms|cpu_ms] TREE [TREE ...]

A TREE is a checkout of the service (`git worktree add /tmp/base main`, or `git archive`). Each
round runs every tree in its own process: fresh database (migrated by that tree), demo data, a
warm-up, then `n` requests through the WSGI app with no HTTP and no profiler. Prints ms per
request per round, the median per tree, and each tree's median over the first's.

`refresh_openid` is `refresh_switch` for a session whose ceiling holds `openid email profile`
(a first-party client with the storefront's ceiling and those, `bench-oidc`, logged in by the
password grant): with the same tree before and after a change, what the ID token of a refresh
costs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-qtAX", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", sql],
        check=True,
        capture_output=True,
    )


def child(load: str, n: int) -> None:
    """In the tree's own interpreter: migrate, load the demo, time `n` requests. Imported
    here, not above: which token_service is measured is this process's PYTHONPATH."""
    from profile_hot_path import call  # bench/, on sys.path as this script's directory

    from token_service import create_app
    from token_service.database import upgrade
    from token_service.demo import DEMO_PASSWORD, load_demo
    from token_service.extensions import db
    from token_service.keys import KeyRing
    from token_service.models import Client
    from token_service.services.clients import create_client

    KeyRing(Path(os.environ["TOKEN_SERVICE_KEYS_DIR"]), 3660).generate("RS256")
    app = create_app()
    with app.app_context():
        upgrade(db.engine)
        secrets = load_demo()
        if load == "refresh_openid":
            create_client(
                "bench-oidc",
                confidential=False,
                grant_types=["password", "refresh_token"],
                scope=db.session.get(Client, "storefront").scope + " openid email profile",
                first_party=True,
            )
        db.session.commit()
    client_id = "bench-oidc" if load == "refresh_openid" else "storefront"
    login = {"grant_type": "password", "client_id": client_id}
    login |= {"username": "alice@acme.test", "password": DEMO_PASSWORD}
    state = {"rt": call(app, "/oauth/token", login)["refresh_token"], "i": 0}
    basic = (
        "Basic " + base64.b64encode(f"order-service:{secrets['order-service']}".encode()).decode()
    )
    access = call(app, "/oauth/token", login)["access_token"]

    def one() -> None:
        if load in ("refresh_switch", "refresh_openid"):
            state["i"] += 1
            form = {"grant_type": "refresh_token", "client_id": client_id}
            form |= {"refresh_token": state["rt"]}
            form["legal_entity_id"] = "acme" if state["i"] % 2 else "globex"
            state["rt"] = call(app, "/oauth/token", form)["refresh_token"]
        elif load == "introspection":
            call(app, "/oauth/introspect", {"token": access}, basic)
        else:
            call(app, "/oauth/token", login)

    for _ in range(min(n // 10, 200)):
        one()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        one()
    cpu_ms = (time.process_time() - cpu) / n * 1000
    print(json.dumps({"ms": (time.perf_counter() - start) / n * 1000, "cpu_ms": cpu_ms}))


def run_tree(tree: Path, args) -> float:
    work = Path(tempfile.mkdtemp(prefix="ab-hot-path-"))
    (work / "keys").mkdir()
    env = dict(os.environ)
    env |= {
        "PYTHONPATH": f"{tree}{os.pathsep}{HERE}",
        "TOKEN_SERVICE_KEYS_DIR": str(work / "keys"),
        "TOKEN_SERVICE_ISSUER": "http://bench.test",
        "TOKEN_SERVICE_LOGIN_FREE_ATTEMPTS": "1000000",
    }
    database = None
    if args.backend == "postgresql":
        database = f"ab_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        psql(f"CREATE DATABASE {database}")
        for setting in args.pg_setting:  # e.g. synchronous_commit=off: no fsync per commit
            key, value = setting.split("=", 1)
            psql(f"ALTER DATABASE {database} SET {key} = '{value}'")
        env |= {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": REDIS_URL,
            "TOKEN_SERVICE_REDIS_PREFIX": f"{database}:",
        }
    else:
        env["DATABASE_URL"] = f"sqlite:///{work / 'ab.sqlite3'}"
        env.pop("REDIS_URL", None)
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--load", args.load, "--n", str(args.n)],
            env=env,
            cwd=tree,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out.strip().splitlines()[-1])[args.metric]
    finally:
        if database:
            psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="*", type=Path)
    parser.add_argument("--load", default="refresh_switch")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="postgresql", choices=["postgresql", "sqlite"])
    parser.add_argument("--pg-setting", action="append", default=[])
    # cpu_ms: this process's CPU time per request (not the database's nor the store's), which
    # other work on a shared machine skews less than the wall time.
    parser.add_argument("--metric", default="ms", choices=["ms", "cpu_ms"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.load, args.n)
        return
    times: dict[Path, list[float]] = {tree: [] for tree in args.trees}
    for round_ in range(args.rounds):
        order = args.trees if round_ % 2 == 0 else list(reversed(args.trees))
        for tree in order:
            times[tree].append(run_tree(tree.resolve(), args))
            print(f"round {round_ + 1} {tree}: {times[tree][-1]:.3f} {args.metric}", flush=True)
    first = statistics.median(times[args.trees[0]])
    for tree, values in times.items():
        median = statistics.median(values)
        print(
            f"{tree}: median {median:.3f} {args.metric} per {args.load} "
            f"({median / first:.3f} x first)"
        )


if __name__ == "__main__":
    main()
