"""Which gunicorn worker model serves the token service best: one sync worker against one
gthread worker with N threads, side by side in one run (issue 18; docs/performance.md).

Every model runs at once, each one gunicorn master with one worker pinned to the service core,
on one fresh database; wrk (16 connections, keep-alive, from the load core) drives each in turn,
alternating, for several rounds: the machine's speed drifts over a run, and only ratios within
a round mean anything. Prints one JSON line per round and load, with each model's rps, p50 and
p99, and its ratio to the sync worker's rps in that round; then the median ratios.

    .venv/bin/python bench/worker_model.py [--backends postgresql,sqlite] [--threads 4,8]
        [--loads refresh_switch,introspection] [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import run as bench

DATABASE = "bench_worker_model"  # apart from run.py's, which may run at the same time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--threads", default="4,8", help="gthread models to compare with sync")
    parser.add_argument("--loads", default="refresh_switch,introspection")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = [0, *(int(t) for t in args.threads.split(","))]
    ratios: dict[tuple, list[float]] = {}
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-model-{name}-") as work:
            work = Path(work)
            database = DATABASE if name == "postgresql" else None
            backend = bench.prepare(name, work, database)
            servers = {}
            try:
                for i, threads in enumerate(models):
                    bench.SERVICE_THREADS[0] = threads
                    log = work / f"service-{threads}.log"
                    server = bench.Server("wsgi:app", 8310 + i, backend.env, bench.ROOT, log)
                    servers[threads] = server.start()
                for load in args.loads.split(","):  # warm every worker up on every load
                    for server in servers.values():
                        bench.measure(backend, server, load, 1, 0)
                for round_ in range(1, args.rounds + 1):
                    for load in args.loads.split(","):
                        order = models[round_ % len(models) :] + models[: round_ % len(models)]
                        results = {
                            t: bench.measure(backend, servers[t], load, args.duration, 0)
                            for t in order
                        }
                        base = results[0]["rps"]
                        record = {"backend": name, "round": round_, "load": load}
                        for t, r in results.items():
                            label = "sync" if t == 0 else f"gthread{t}"
                            record[label] = {k: r[k] for k in ("rps", "p50_ms", "p99_ms", "errors")}
                            record[label]["worker_cpu"] = r["worker_cpu"]
                            if t:
                                ratio = round(r["rps"] / max(base, 0.1), 2)
                                record[label]["ratio_to_sync"] = ratio
                                ratios.setdefault((name, load, label), []).append(ratio)
                        bench.emit(record)
            finally:
                for server in servers.values():
                    server.stop()
                if database:
                    bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    summary = {
        f"{b}:{load}:{label}": statistics.median(v) for (b, load, label), v in ratios.items()
    }
    bench.emit({"median_ratio_to_sync": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
