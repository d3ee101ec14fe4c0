"""Which worker model serves the token service best, side by side in one run (issue 18;
docs/performance.md): gunicorn's sync worker (`sync`), its gthread worker with N threads
(`gthreadN`), granian as `token-service serve` runs it with N slots (`granianN`).

Every model runs at once, each one server with one worker pinned to the service core, on one
fresh database; wrk (16 connections, keep-alive, from the load core) drives each in turn,
alternating, for several rounds: the machine's speed drifts over a run, and only ratios within
a round mean anything. Prints one JSON line per round and load, with each model's rps, p50 and
p99, its worker's CPU per request and its ratio to the first model's rps in that round; then
the median ratios.

    .venv/bin/python bench/worker_model.py [--backends postgresql,sqlite]
        [--models gthread4,granian4,granian8] [--loads refresh_switch,introspection]
        [--duration 5] [--rounds 3]
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
    parser.add_argument("--models", default="gthread4,granian4,granian8", help="the first is 1")
    parser.add_argument("--loads", default="refresh_switch,introspection")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    models = args.models.split(",")
    ratios: dict[tuple, list[float]] = {}
    for name in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-model-{name}-") as work:
            work = Path(work)
            database = DATABASE if name == "postgresql" else None
            backend = bench.prepare(name, work, database)
            servers = {}
            try:
                for model in models:
                    kind = model.rstrip("0123456789")
                    bench.SERVER[0] = kind
                    bench.SERVICE_THREADS[0] = int(model[len(kind) :] or 1)
                    log = work / f"service-{model}.log"
                    port = bench.free_port()
                    servers[model] = bench.Server("wsgi:app", port, backend.env, bench.ROOT, log)
                    servers[model].start()
                for load in args.loads.split(","):  # warm every worker up on every load
                    for server in servers.values():
                        bench.measure_ours(backend, server, load, 1, 0)
                for round_ in range(1, args.rounds + 1):
                    for load in args.loads.split(","):
                        order = models[round_ % len(models) :] + models[: round_ % len(models)]
                        results = {
                            m: bench.measure_ours(backend, servers[m], load, args.duration, 0)
                            for m in order
                        }
                        base = results[models[0]]["rps"]
                        record = {"backend": name, "round": round_, "load": load}
                        for m, r in results.items():
                            record[m] = {k: r[k] for k in ("rps", "p50_ms", "p99_ms", "errors")}
                            cpu_us = r["worker_cpu"] / max(r["rps"], 1) * 1e6
                            record[m]["worker_cpu_us_per_request"] = round(cpu_us)
                            if m != models[0]:
                                ratio = round(r["rps"] / max(base, 0.1), 2)
                                record[m][f"ratio_to_{models[0]}"] = ratio
                                ratios.setdefault((name, load, m), []).append(ratio)
                        bench.emit(record)
            finally:
                for server in servers.values():
                    server.stop()
                if database:
                    bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    summary = {
        f"{b}:{load}:{label}": statistics.median(v) for (b, load, label), v in ratios.items()
    }
    bench.emit({f"median_ratio_to_{models[0]}": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
