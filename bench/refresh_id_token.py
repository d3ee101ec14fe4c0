"""What the ID token of a refresh (OpenID Connect Core §12.2) costs, in-process, on one tree:
refreshes with a company switch, through the WSGI app with no HTTP, for three sessions of alice
side by side in the same process, batch by batch in turn (so that a drift of the machine's
speed hits all three alike):

- `storefront`: the password grant's session, no `openid` in its ceiling (no ID token);
- `openid`: a first-party client whose ceiling adds `openid` (an ID token: one more signature);
- `openid email profile`: adds the claims, for which a refresh reads the customer's email.

    .venv/bin/python bench/refresh_id_token.py [--backend postgresql|sqlite] [--batch 200]
        [--rounds 15]

Prints, per session, the median over the rounds of the wall time and of this process's CPU
time per refresh, each one's excess over `storefront`, and one RS256 signature alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SESSIONS = {
    "storefront": None,
    "openid": "openid",
    "openid email profile": "openid email profile",
}


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-qtAX", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-c", sql],
        check=True,
        capture_output=True,
    )


def measure(args) -> None:
    from profile_hot_path import call

    from token_service import create_app
    from token_service.database import upgrade
    from token_service.demo import DEMO_PASSWORD, load_demo
    from token_service.extensions import db
    from token_service.keys import KeyRing
    from token_service.models import Client
    from token_service.services.clients import create_client

    KeyRing(Path(os.environ["TOKEN_SERVICE_KEYS_DIR"]), 3660).generate("RS256")
    app = create_app()
    clients = {}
    with app.app_context():
        upgrade(db.engine)
        load_demo()
        ceiling = db.session.get(Client, "storefront").scope
        for i, (name, extra) in enumerate(SESSIONS.items()):
            clients[name] = "storefront"
            if extra:
                clients[name] = f"bench-oidc-{i}"
                create_client(
                    clients[name],
                    confidential=False,
                    grant_types=["password", "refresh_token"],
                    scope=f"{ceiling} {extra}",
                    first_party=True,
                )
        db.session.commit()
    chains = {}
    for name, client_id in clients.items():
        login = {"grant_type": "password", "client_id": client_id}
        login |= {"username": "alice@acme.test", "password": DEMO_PASSWORD}
        chains[name] = {"rt": call(app, "/oauth/token", login)["refresh_token"], "i": 0}

    def refresh(name: str) -> dict:
        chain = chains[name]
        chain["i"] += 1
        form = {"grant_type": "refresh_token", "client_id": clients[name]}
        form |= {"refresh_token": chain["rt"]}
        form["legal_entity_id"] = "acme" if chain["i"] % 2 else "globex"
        answer = call(app, "/oauth/token", form)
        chain["rt"] = answer["refresh_token"]
        return answer

    for name in SESSIONS:
        assert ("id_token" in refresh(name)) is (SESSIONS[name] is not None), name
        for _ in range(args.batch):
            refresh(name)
    wall: dict[str, list[float]] = {name: [] for name in SESSIONS}
    cpu: dict[str, list[float]] = {name: [] for name in SESSIONS}
    names = list(SESSIONS)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            start, used = time.perf_counter(), time.process_time()
            for _ in range(args.batch):
                refresh(name)
            wall[name].append((time.perf_counter() - start) / args.batch * 1000)
            cpu[name].append((time.process_time() - used) / args.batch * 1000)
    key = app.extensions["keyring"].current
    claims = {"iss": "http://bench.test", "sub": "cus_alice", "aud": "x", "iat": 1, "exp": 2}
    start = time.perf_counter()
    for _ in range(2000):
        key.encode_jwt(claims, typ="JWT")
    signature = (time.perf_counter() - start) / 2000 * 1000

    base_wall, base_cpu = (
        statistics.median(wall["storefront"]),
        statistics.median(cpu["storefront"]),
    )
    print(f"{args.backend}, {args.rounds} rounds of {args.batch} refreshes with a switch each:")
    for name in SESSIONS:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"  {name:22} wall {w:.3f} ms (+{w - base_wall:.3f})"
            f"  cpu {c:.3f} ms (+{c - base_cpu:.3f})"
        )
    print(f"  one {key.alg} signature alone: {signature:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="postgresql", choices=["postgresql", "sqlite"])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="refresh-id-token-"))
    (work / "keys").mkdir()
    os.environ |= {
        "TOKEN_SERVICE_KEYS_DIR": str(work / "keys"),
        "TOKEN_SERVICE_ISSUER": "http://bench.test",
        "TOKEN_SERVICE_LOGIN_FREE_ATTEMPTS": "1000000",
    }
    database = None
    if args.backend == "postgresql":
        database = f"idt_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        psql(f"CREATE DATABASE {database}")
        os.environ |= {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": REDIS_URL,
            "TOKEN_SERVICE_REDIS_PREFIX": f"{database}:",
        }
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{work / 'bench.sqlite3'}"
        os.environ.pop("REDIS_URL", None)
    try:
        measure(args)
    finally:
        if database:
            psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


if __name__ == "__main__":
    main()
