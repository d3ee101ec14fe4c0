"""Where the CPU of a refresh with switch, a client_credentials and an introspection goes, by
layer, under the threaded model; and instructions per request, for before/after comparisons
that a noisy machine cannot move.

    .venv/bin/python bench/profile_threaded.py [--backends postgresql,sqlite]
        [--loads refresh_switch,client_credentials,introspection] [--seconds 10] [--keep DIR]
        [--server granian|gthread|sync]
    .venv/bin/python bench/profile_threaded.py --callgrind [--n 200] [--tree PATH ...]
    .venv/bin/python bench/profile_threaded.py --perf [--backends ...] [--loads ...] [--seconds 5]

Default (py-spy): for each backend, a fresh database with the demo data and the service as
`make bench` serves it (bench/run.py: one granian worker, four slots, keep-alive, pinned to
core 0; wrk on core 1, 16 connections). Per load: the worker's CPU time per request without
a profiler, then py-spy (`--native`: C frames too, so the RSA signature, the drivers and the
waits for the GIL show) for `--seconds`. A sample whose innermost frames wait (for the GIL, a
lock, the poller, the database's answer) is left out; every other one goes to one layer: the
first of LAYERS, top to bottom, one of whose patterns matches one of its frames, else the
innermost frame of a WRAPPERS package. Prints each layer's share of the CPU samples (JSON,
then a list on stderr). Proportions, not rps: a neighbour that steals the core slows every
layer alike. py-spy pausing the worker for each native stack slows it by half; the shares hold.
Under granian (since December 2) py-spy 0.4 sees no Python frames in the threads that run the
app, which Rust starts: nearly every sample lands in granian's own frames, so the split says
nothing there; `--server gthread` profiles the service under gunicorn's gthread as before,
and `--callgrind` counts the service's own work without any server.

`--callgrind`: for each tree (a checkout of the service; default this one), each backend and
each load, one process under `valgrind --tool=callgrind` calls the WSGI app (`Observed` and all:
JSON request line to /dev/null, metrics in multi-process mode) `--n` times in one thread after a
warm-up, and prints the instructions per request and their split by shared object (the
interpreter, cryptography's OpenSSL, sqlite, the drivers...). Collection is split at calls to
`os.sched_yield()` (`--dump-before`), so start-up and warm-up are not counted. No HTTP server:
the server's share is the py-spy run's. What other processes do does not change the counts, but
valgrind's own speed does a little: the service's caches that expire after a second or a few
(sessions' state, clients, the deny-list copy's PING) expire after fewer or more requests, so a
whole request's count moves by 1–2 % between runs (introspection's by up to 15 %). `--loads
sign` counts one access token's signing alone, which moves by nothing: the A/B for keys.py.

`--perf`: ours served as `make bench` serves it and node-oidc-provider (bench/peer.py), both on
the service core, each under the same wrk load in turn (the peer's load that `make bench`
compares). Per side: its CPU per request unprofiled, then `perf record -e cpu-clock` on all its
threads and `perf stat -e context-switches` over the same seconds. The samples' shared objects
(and, inside node's binary, OpenSSL's symbols) split the CPU per request into parts both sides
share: the kernel, OpenSSL, the interpreter or V8, the server, the drivers. This is where the
served time goes under granian, whose Python threads py-spy cannot read. Needs perf (Debian's
linux-perf); its software events work where the hardware counters are not exposed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import peer as peers  # bench/peer.py: node-oidc-provider
import run as bench  # bench/run.py: fresh backends, the served worker, wrk
from joserfc import jwt

LOADS = ("refresh_switch", "client_credentials", "introspection")

#: A sample whose innermost frames wait (for the GIL, a lock, the poller, the database's
#: answer, SQLite's busy handler between two tries at its write lock, the disk) is no CPU.
WAITING = re.compile(
    r"pthread_cond_(timed)?wait|epoll_wait|sem_(timed)?wait|PyThread_acquire_lock|^poll \(libc"
    r"|^(usleep|nanosleep|clock_nanosleep|fdatasync|fsync) \(libc"
)

# (layer, pattern on a frame "function (path:line)"), most specific first: a sample goes to the
# first layer one of its frames matches (the layer's whole subtree).
LAYERS = [
    ("grace response: HKDF + AES-GCM seal, JSON, store write", r"oauth2/grace\.py|_keep_for_grace"),
    ("RSA signature (OpenSSL in cryptography)", r"AlgModel\.sign|Algorithm\.sign"),
    ("JWT signing around the signature (joserfc, claims)", r"encode_jwt"),
    ("JWT verification (joserfc; cached)", r"KeyRing\.decode"),
    ("client authentication (Basic, HMAC, client cache)", r"authenticate_client|load_client"),
    ("metrics (prometheus_client)", r"token_service/metrics\.py|prometheus_client/"),
    ("request log line (logs, orjson, write)", r"token_service/logs\.py|structlog/"),
    ("audit", r"token_service/audit\.py"),
    ("deny-list copy, Redis, store file", r"revocation\.py|token_service/kv/|redis/"),
    (
        "SQL: statements and driver",
        r"hotpath\.py|oauth2/sessions/|psycopg|sqlite3|_sqlite|token_service/database\.py",
    ),
    ("SQLAlchemy session, pool, commit", r"sqlalchemy/|flask_sqlalchemy/"),
    ("form parsing", r"parse_form|read_form"),
    ("scopes", r"token_service/scopes\.py"),
    ("response JSON", r"json/|_json\.c"),
    ("grant and introspection logic", r"token_service/oauth2/"),
]

# Else the innermost frame of one of these packages: the layers that wrap every request.
WRAPPERS = [
    ("WSGI layers: front, Observed, body buffer, Flask app context", r"token_service/|flask/"),
    (
        "the server: granian's Rust (HTTP, the thread pool), or gunicorn's Python",
        r"granian|gunicorn/|concurrent/|tokio|hyper",
    ),
]


def layer_of(frames: list[str]) -> str | None:
    """The layer of one sample, None if it waits."""
    if any(WAITING.search(frame) for frame in frames[-3:]):
        return None
    for name, pattern in _SUBTREES:
        if any(pattern.search(frame) for frame in frames):
            return name
    for frame in reversed(frames):
        for name, pattern in _WRAPPERS:
            if pattern.search(frame):
                return name
    return "other (interpreter, threading)"


_SUBTREES = [(name, re.compile(pattern)) for name, pattern in LAYERS]
_WRAPPERS = [(name, re.compile(pattern)) for name, pattern in WRAPPERS]


def summarize(raw: Path) -> dict[str, float]:
    """Share of the CPU samples per layer, from py-spy's raw (collapsed) output; "samples"
    and "waiting" count the CPU samples and the samples left out."""
    shares, total, waiting = Counter(), 0, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        layer = layer_of(stack.split(";"))
        if layer is None:
            waiting += int(count)
            continue
        shares[layer] += int(count)
        total += int(count)
    result = {name: n / max(total, 1) for name, n in shares.most_common()}
    return result | {"samples": total, "waiting": waiting}


@contextmanager
def served(backend_name: str):
    """(backend, service, work): a fresh database with the demo data and the service on it as
    `make bench` serves it; the database is dropped at the end."""
    with tempfile.TemporaryDirectory(prefix="bench-served-") as tmp:
        work = Path(tmp)
        database = f"bench_served_{os.getpid()}" if backend_name == "postgresql" else None
        backend = bench.prepare(backend_name, work, database)
        try:
            service = bench.Server(
                "wsgi:app", bench.free_port(), backend.env, bench.ROOT, work / "service.log"
            ).start()
            try:
                yield backend, service, work
            finally:
                service.stop()
        finally:
            if database:
                bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def spy(backend_name: str, loads: list[str], seconds: float, keep: Path | None) -> None:
    """The served worker under each load: its CPU per request unprofiled, then py-spy."""
    with served(backend_name) as (backend, service, work):
        for load in loads:
            bench.measure_ours(backend, service, load, 2, 0)  # warm up
            plain = bench.measure_ours(backend, service, load, seconds, 0)
            raw = work / f"{load}.txt"
            cmd = [*_py_spy(raw), "-p", str(service.worker), "-d", str(int(seconds))]
            sampler = threading.Thread(
                target=subprocess.run, args=(cmd,), kwargs={"capture_output": True}
            )
            work_load = bench.our_load(backend, service, load)
            if work_load.fresh:  # new chains or token: their logins before the samples
                work_load.fresh()
            sampler.start()
            bench.wrk(
                service.url + work_load.path,
                seconds + 1,
                work_load.script,
                work_load.env,
                work_load.threads,
            )
            sampler.join()
            record = {"backend": backend_name, "load": load, "served": True}
            record["rps"] = plain["rps"]
            record["worker_cpu_us_per_request"] = round(
                plain["worker_cpu"] / max(plain["rps"], 1) * 1e6
            )
            _report(record, raw, keep, f"served-{backend_name}-{load}")


def _py_spy(raw: Path) -> list[str]:
    """py-spy with native frames (the RSA signature, the drivers, the waits for the GIL)."""
    py_spy = shutil.which("py-spy") or str(bench.BIN / "py-spy")
    return [py_spy, "record", "-r", "100", "-f", "raw", "-o", str(raw), "--native"]


def _report(record: dict, raw: Path, keep: Path | None, name: str) -> None:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw, keep / f"{name}.txt")
    shares = summarize(raw)
    record["samples"] = shares.pop("samples")
    record["waiting_samples"] = shares.pop("waiting")
    record["layers"] = {k: round(v * 100, 1) for k, v in shares.items()}
    print(json.dumps(record), flush=True)
    for layer, share in shares.items():
        print(f"  {share:6.1%}  {layer}", file=sys.stderr)


def _child_command(loads: list[str], n: int) -> list[str]:
    return [sys.executable, __file__, "--child", "--loads", ",".join(loads), "--n", str(n)]


def _child_env(backend, tree: Path) -> dict:
    """The service's environment, as token_service.serve sets it (metrics in multi-process
    mode)."""
    metrics = backend.work / "metrics"
    metrics.mkdir(exist_ok=True)
    return backend.env | {
        "PYTHONPATH": f"{tree}{os.pathsep}{bench.HERE}",
        "PYTHONHASHSEED": "0",
        "BENCH_SECRETS": json.dumps(backend.secrets),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }


# -- callgrind -------------------------------------------------------------------------------


def child(loads: list[str], n: int) -> None:
    """Under callgrind, in the tree's interpreter: the app as deployed, `n` calls per load.
    os.sched_yield() marks where each load's count starts and ends."""
    from profile_hot_path import call  # bench/, on this child's PYTHONPATH

    from token_service import create_app, logs

    app = create_app()
    logs.configure("json", "INFO", stream=open(os.devnull, "w"))  # noqa: SIM115
    secrets = json.loads(os.environ["BENCH_SECRETS"])
    login = {"grant_type": "password", "client_id": "storefront"}
    login |= {"username": "alice@acme.test", "password": bench.DEMO_PASSWORD}

    def basic(client_id: str) -> str:
        return "Basic " + base64.b64encode(f"{client_id}:{secrets[client_id]}".encode()).decode()

    chain = {"rt": call(app, "/oauth/token", login)["refresh_token"], "i": 0}
    access = call(app, "/oauth/token", login)["access_token"]

    def refresh_switch() -> None:
        chain["i"] += 1
        form = {"grant_type": "refresh_token", "client_id": "storefront"}
        form |= {
            "refresh_token": chain["rt"],
            "legal_entity_id": ("acme", "globex")[chain["i"] % 2],
        }
        chain["rt"] = call(app, "/oauth/token", form)["refresh_token"]

    def client_credentials() -> None:
        call(app, "/oauth/token", {"grant_type": "client_credentials"}, basic("admin-cli"))

    def introspection() -> None:
        call(app, "/oauth/introspect", {"token": access}, basic("order-service"))

    key = app.extensions["keyring"].current
    claims = jwt.decode(access, key.key, registry=key.registry).claims

    def sign() -> None:
        """One access token's signing alone: no cache or clock in the way, so the count is
        the same to the instruction run after run."""
        key.encode_jwt(dict(claims))

    work = {f.__name__: f for f in (refresh_switch, client_credentials, introspection, sign)}
    for load in loads:
        for _ in range(max(n // 5, 20)):
            work[load]()
        os.sched_yield()  # callgrind dumps here: the next part is this load's n calls
        for _ in range(n):
            work[load]()
        os.sched_yield()


def parse_callgrind(path: Path) -> tuple[int, Counter]:
    """Total instructions of one callgrind part, and its self cost per shared object (the
    cost line after a `calls=` line is the call's inclusive cost: skipped)."""
    by_object, total, names = Counter(), 0, {}
    current, inclusive = "?", False
    for line in path.read_text().splitlines():
        if line.startswith(("ob=", "cob=")):
            ref, _, name = line.partition("=")[2].partition(" ")
            if name:
                names[ref] = Path(name).name
            if line.startswith("ob="):
                current = names.get(ref, ref)
        elif line.startswith("calls="):
            inclusive = True
        elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
            parts = line.split()
            if not inclusive and len(parts) >= 2:
                by_object[current] += int(parts[1])
            inclusive = False
        elif line.startswith("totals:"):
            total = int(line.split()[1])
    return total, by_object


def callgrind(
    trees: list[Path], backends: list[str], loads: list[str], n: int, keep: Path | None
) -> None:
    for backend_name in backends:
        for tree in trees:
            with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
                work = Path(tmp)
                database = f"bench_cg_{os.getpid()}" if backend_name == "postgresql" else None
                backend = bench.prepare(backend_name, work, database)
                env = _child_env(backend, tree)
                out = work / "cg.out"
                cmd = ["valgrind", "--tool=callgrind", "--dump-before=sched_yield"]
                cmd += [f"--callgrind-out-file={out}", *_child_command(loads, n)]
                try:
                    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
                    if done.returncode:
                        raise RuntimeError(done.stderr[-3000:])
                finally:
                    if database:
                        bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                for i, load in enumerate(loads):
                    part = Path(f"{out}.{2 * i + 2}")
                    if keep is not None:  # for callgrind_annotate or kcachegrind
                        keep.mkdir(parents=True, exist_ok=True)
                        shutil.copy(part, keep / f"{tree.name}-{backend_name}-{load}.callgrind")
                    total, by_object = parse_callgrind(part)
                    record = {"tree": str(tree), "backend": backend_name, "load": load}
                    record["instructions_per_request"] = total // n
                    record["objects"] = {
                        name: round(cost / total * 100, 1)
                        for name, cost in by_object.most_common(8)
                    }
                    print(json.dumps(record), flush=True)


# -- perf: served, ours and the peer's, by shared object ------------------------------------

#: perf's shared objects -> the part they stand for (the first pattern that matches).
PARTS = [
    ("kernel: sockets, system calls, scheduling", r"^\[kernel"),
    ("OpenSSL (cryptography's, node's): RSA, hashes, AES", r"_rust\.abi3|libcrypto|_openssl"),
    ("the server: granian's Rust", r"_granian"),
    ("database drivers: psycopg, libpq, sqlite", r"psycopg|libpq|sqlite"),
    ("Python: the interpreter and the service's code", r"^python|^libpython"),
    (
        "node: V8, its JIT code, libuv, the rest of its binary",
        r"^node$|perf-\d+\.map|^\[JIT\]|\[unknown\]",
    ),
    ("C library", r"libc\.so|libc-|ld-linux|libm\.so|libpthread"),
    ("C extensions: orjson, argon2, hiredis...", r"\.so"),
]


#: node links OpenSSL into its own binary: its symbols tell the peer's OpenSSL apart.
OPENSSL_SYMBOL = re.compile(r"\[\.\] (ossl_|bn_|BN_|rsaz_|sha\d|SHA\d|aes|AES|EVP_|RSA_|CRYPTO_)")


def part_of(dso: str) -> str:
    for name, pattern in PARTS:
        if re.search(pattern, dso):
            return name
    return "other"


def parts_of(by_dso: Counter, by_symbol: Counter) -> Counter:
    """perf's shares by shared object and by "object [.] symbol" -> shares by PARTS."""
    parts = Counter()
    for dso, share in by_dso.items():
        parts[part_of(dso)] += share
    for symbol, share in by_symbol.items():
        if symbol.startswith("node ") and OPENSSL_SYMBOL.search(symbol):
            parts[part_of("node")] -= share
            parts[part_of("libcrypto")] += share
    return parts


def perf_dsos(pid: int, seconds: float, out: Path) -> tuple[Counter, Counter]:
    """perf's samples (cpu-clock, all threads of `pid`) over `seconds`, by shared object and by
    symbol, as shares of all samples."""
    subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-p", str(pid), "-o", str(out),
         "--", "sleep", str(seconds)],
        check=True, capture_output=True,
    )  # fmt: skip
    by = {}
    for sort in ("dso", "dso,sym"):
        text = subprocess.run(
            ["perf", "report", "-i", str(out), "--sort", sort, "--stdio", "-q",
             "--percent-limit", "0.05"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        shares = Counter()
        for line in text.splitlines():
            share, _, rest = line.strip().partition("%")
            if rest:
                shares[" ".join(rest.split())] += float(share) / 100
        by[sort] = shares
    return by["dso"], by["dso,sym"]


def perf_side(side: str, server, load: bench.Load, seconds: float, work: Path) -> dict:
    """One side under one load: unprofiled CPU per request, then perf under the same load."""
    plain = bench.measure(server, load, seconds, 2)
    cpu_us = plain["worker_cpu"] / max(plain["rps"], 1) * 1e6
    if load.fresh:
        load.fresh()
    pid = server.worker if server.is_service else server.proc.pid  # the peer: one process
    box: dict = {}

    def sample() -> None:
        box["dso"], box["sym"] = perf_dsos(pid, seconds, work / "p.data")

    def switches() -> None:  # every thread's, voluntary or not (a software event)
        done = subprocess.run(
            ["perf", "stat", "-x,", "-e", "context-switches", "-p", str(pid), "--", "sleep",
             str(seconds)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        box["switches"] = int(done.stderr.strip().splitlines()[-1].split(",")[0])

    samplers = [threading.Thread(target=sample), threading.Thread(target=switches)]
    for sampler in samplers:
        sampler.start()
    served = bench.wrk(server.url + load.path, seconds + 1, load.script, load.env, load.threads)
    for sampler in samplers:
        sampler.join()
    parts = parts_of(box["dso"], box["sym"])
    return {
        "side": side,
        "rps": plain["rps"],
        "cpu_us_per_request": round(cpu_us),
        # wrk ran a second longer than perf: its rate, not its count
        "context_switches_per_request": round(box["switches"] / (served["rps"] * seconds), 1),
        "us_per_request_by_part": {k: round(v * cpu_us) for k, v in parts.most_common()},
        "top_symbols": {k: round(v * 100, 1) for k, v in box["sym"].most_common(12)},
    }


def perf(backend_name: str, loads: list[str], seconds: float) -> None:
    """Ours (as `make bench` serves it) and the peer, both on the service core, each under the
    same wrk load in turn: CPU per request, split by what perf sees running."""
    with served(backend_name) as (backend, service, work):
        other = peers.Peer(bench.free_port(), bench.SERVICE_CORE, work / "peer.log").start()
        try:
            for load in loads:
                ours = perf_side("ours", service, bench.our_load(backend, service, load),
                                 seconds, work)  # fmt: skip
                spec = other.load(peers.COMPARED[load], work, bench.CONNECTIONS)
                theirs = perf_side("peer", other, bench.Load(**spec), seconds, work)
                for record in (ours, theirs):
                    print(json.dumps({"backend": backend_name, "load": load} | record), flush=True)
                names = set(ours["us_per_request_by_part"]) | set(theirs["us_per_request_by_part"])
                print(
                    f"# {backend_name} {load}: µs of CPU per request, ours / the peer's",
                    file=sys.stderr,
                )
                for name in sorted(names, key=lambda n: -ours["us_per_request_by_part"].get(n, 0)):
                    a = ours["us_per_request_by_part"].get(name, 0)
                    b = theirs["us_per_request_by_part"].get(name, 0)
                    print(f"  {a:6d} {b:6d}  {name}", file=sys.stderr)
                print(f"  {ours['cpu_us_per_request']:6d} {theirs['cpu_us_per_request']:6d}  all",
                      file=sys.stderr)  # fmt: skip
                print(f"  {ours['context_switches_per_request']:6} "
                      f"{theirs['context_switches_per_request']:6}  context switches per request",
                      file=sys.stderr)  # fmt: skip
        finally:
            other.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--perf", action="store_true", help="ours and the peer, by shared object")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--tree", type=Path, action="append", default=[])
    parser.add_argument("--keep", type=Path, help="keep each profile (py-spy raw, callgrind) here")
    parser.add_argument("--server", default="granian", choices=["granian", "gthread", "sync"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    bench.SERVER[0] = args.server
    loads = args.loads.split(",")
    if args.child:
        child(loads, args.n)
    elif args.callgrind:
        trees = [t.resolve() for t in args.tree] or [bench.ROOT]
        callgrind(trees, args.backends.split(","), loads, args.n, args.keep)
    elif args.perf:
        if not shutil.which("perf"):
            sys.exit("--perf needs perf: apt-get install linux-perf")
        for backend_name in args.backends.split(","):
            perf(backend_name, [load for load in loads if load in peers.COMPARED], args.seconds)
    else:
        for backend_name in args.backends.split(","):
            spy(backend_name, loads, args.seconds, args.keep)


if __name__ == "__main__":
    main()
