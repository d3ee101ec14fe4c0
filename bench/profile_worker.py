"""Profile the served worker under one of make bench's loads, with py-spy (sampling, from
outside the process: the worker runs unmodified, as in the benchmark).

    .venv/bin/python bench/profile_worker.py [refresh_switch] [--backend postgresql|sqlite]

Prints the share of samples per function, own time and inclusive (service and framework
frames), and the share of samples in which the worker was idle (waiting on the network).
Needs py-spy (`pip install py-spy`) and the rights to attach to a child process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import run as bench


def summarize(raw: Path, top: int) -> None:
    total, own, inclusive = 0, Counter(), Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples")
    print("own time:")
    for frame, n in own.most_common(top):
        print(f"  {n / total:6.1%}  {frame}")
    print("inclusive (service and framework):")
    shown = 0
    for frame, n in inclusive.most_common():
        if any(s in frame for s in ("token_service", "flask/", "werkzeug/", "sqlalchemy/")):
            print(f"  {n / total:6.1%}  {frame}")
            shown += 1
            if shown == top:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("load", nargs="?", default="refresh_switch", choices=list(bench.TARGETS))
    parser.add_argument("--backend", default="postgresql", choices=["postgresql", "sqlite"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(bench.BIN / "py-spy")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        work = Path(tmp)
        database = f"bench_profile_{os.getpid()}" if args.backend == "postgresql" else None
        backend = bench.prepare(args.backend, work, database)
        service = bench.Server(
            "wsgi:app", bench.free_port(), backend.env, bench.ROOT, work / "service.log"
        )
        service.start()
        try:
            bench.measure_ours(backend, service, args.load, 2, 0)  # warm up
            raw = work / "raw.txt"
            # --idle: samples in which the worker waits count too (as their own frames).
            cmd = [py_spy, "record", "-p", str(service.worker), "-d", str(int(args.seconds))]
            cmd += ["-r", "400", "-f", "raw", "-o", str(raw), "--nonblocking", "--idle"]
            spy = threading.Thread(
                target=subprocess.run, args=(cmd,), kwargs={"capture_output": True}
            )
            spy.start()
            result = bench.measure_ours(backend, service, args.load, args.seconds + 1, 0)
            spy.join()
            print(f"{args.load} on {args.backend}: {result['rps']} rps under the profiler")
            summarize(raw, args.top)
        finally:
            service.stop()
            if database:
                bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
