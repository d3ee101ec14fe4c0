"""The served worker's CPU time per request under two servers, or two source trees, interleaved.

    .venv/bin/python bench/ab_served.py [--backend sqlite|postgresql] [--seconds 5]
        [--rounds 3] [--loads introspection,client_credentials]
        [--tree-a PATH] [--tree-b PATH] [A_SERVER] [B_SERVER]

A server is `granian` (as `token-service serve` runs it, the default), `gthread` or `sync`
(gunicorn's worker models): e.g. `gthread granian`, or `--tree-a /tmp/before` for a change (each
side imports the service from its tree; default this checkout). Two servers as `make bench`
runs them (bench/run.py: one worker, four requests at once, pinned to core 0; wrk on core 1),
the same database. Each load runs on A and B in turn, A B B A, and prints for each side the rps,
the p99 and the worker's CPU microseconds per request, then the ratios of the medians (B / A: a
CPU ratio of 0.9 would be 10 % less CPU). CPU per request, not rps, is what a shared machine
leaves comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import run as bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", nargs="?", default="granian", choices=["granian", "gthread", "sync"])
    parser.add_argument("b", nargs="?", default="granian", choices=["granian", "gthread", "sync"])
    parser.add_argument("--backend", default="sqlite", choices=["postgresql", "sqlite"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", default="introspection,client_credentials")
    parser.add_argument("--tree-a", type=Path, default=bench.ROOT)
    parser.add_argument("--tree-b", type=Path, default=bench.ROOT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ab-served-") as tmp:
        work = Path(tmp)
        database = f"bench_ab_{os.getpid()}" if args.backend == "postgresql" else None
        backend = bench.prepare(args.backend, work, database)
        servers = {}
        sides = (("a", args.a, args.tree_a), ("b", args.b, args.tree_b))
        try:
            for side, model, tree in sides:
                tree = tree.resolve()
                env = backend.env | {"PYTHONPATH": str(tree)}
                log = work / f"{side}.log"
                bench.SERVER[0] = model
                servers[side] = bench.Server("wsgi:app", bench.free_port(), env, tree, log)
                servers[side].start()
            for load in args.loads.split(","):
                cpu = {side: [] for side in servers}
                rps = {side: [] for side in servers}
                p99 = {side: [] for side in servers}
                for server in servers.values():
                    bench.measure_ours(backend, server, load, 2, 0)  # warm up
                for i in range(args.rounds * 2):
                    for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
                        result = bench.measure_ours(backend, servers[side], load, args.seconds, 0)
                        rps[side].append(result["rps"])
                        p99[side].append(result["p99_ms"])
                        per_request = result["worker_cpu"] / max(result["rps"], 1) * 1e6
                        cpu[side].append(round(per_request))
                a, b = (statistics.median(cpu[side]) for side in ("a", "b"))
                record = {"load": load, "backend": args.backend, "a": args.a, "b": args.b}
                record |= {"trees": [str(args.tree_a), str(args.tree_b)]}
                rps_a, rps_b = (statistics.median(rps[side]) for side in ("a", "b"))
                record |= {"rps_ratio_b_over_a": round(rps_b / max(rps_a, 1), 3)}
                record |= {"p99_ms": p99, "rps": rps, "worker_cpu_us": cpu}
                record["cpu_ratio_b_over_a"] = round(b / a, 3)
                print(json.dumps(record), flush=True)
        finally:
            for server in servers.values():
                server.stop()
            if database:
                bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


if __name__ == "__main__":
    main()
