"""`make bench`: the service's loads against node-oidc-provider and against floors, in one run.

For each backend (PostgreSQL + Redis, then the embedded default: SQLite + its store file):
a fresh database with the demo data, then two servers with one worker each (granian, four
requests at once, keep-alive: as `token-service serve` runs them), pinned to core 0 (the service,
and the floors: a bare POST endpoint and one that parses the form and signs one RS256 JWT with
the service's key), and wrk pinned to core 1, 16 connections, closed loop. Loads: password
login, refresh without switch, refresh switching between two entities on every request,
client_credentials, introspection of an access token. Refresh loads run one chain per
connection: every response's refresh token is the next request's.

The peer (bench/peer.py): node-oidc-provider, started once for the run on the same core 0, doing
the same job minus legal entities. Refresh, refresh with switch, client_credentials and
introspection are each compared with the peer's refresh, client_credentials and introspection
of its opaque access token, measured right after ours in odd rounds and right before in even
ones. `--rounds` rounds (3) of all the loads; a load's ratio is the median of its per-round
ratios.

Each load also runs between two measurements of its floor, taken just before and just after it
(one load's "after" is the next one's "before" when they share a floor), and its floor ratio is
against their mean: the machine's speed drifts over a run. The floors are context where the
peer gives the target (issue 18), and the target for password login (argon2id).
Prints one JSON line per measurement (requests, errors, rps, p50/p90/p99 ms, the server's CPU
share, PostgreSQL's and Redis's CPU per request) and per load and round (the ratios), then a
table per backend on stderr (per round: ours, the peer's, the ratios, p50/p99 of both), one JSON
line per load with the medians and the verdict, then one line for a fresh worker's memory after
50,000 and 100,000 requests, then (PostgreSQL) refresh with switch on 1,000 and on 1,000,000
customers (bench/growth.py), then the targets met or missed by how much (stderr) and a summary.
docs/performance.md explains the figures.

    .venv/bin/python bench/run.py [--backends postgresql,sqlite] [--duration 10] [--warmup 2]
        [--rounds 3] [--no-peer] [--peer-pool-threads 1]
        [--loads refresh_switch,...] [--no-growth] [--no-memory] [--rebuild-growth]
        [--service-workers 1] [--service-threads 4] [--server granian|gthread|sync]
        [--pg-setting synchronous_commit=off]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import peer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CONNECTIONS = 16
SERVICE_CORE, LOAD_CORE = "0", "1"
DEMO_PASSWORD = "correct horse battery staple"
GROWTH = {"small": (1_000, 100, 400), "large": (1_000_000, 100_000, 400_000)}

# (load, floor, minimum ratio); refresh_switch's target depends on the backend.
TARGETS = {
    "password_login": ("argon2id", 0.9),
    "refresh": ("sign", None),
    "refresh_switch": ("sign", {"postgresql": 0.7, "sqlite": 0.75}),
    "client_credentials": ("sign", 0.8),
    "introspection": ("bare", 0.8),
}
P99_OVER_P50 = 4.0


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port no one listens on now: other engineers run this bench on the same machine."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd: list[str], env: dict, **kw) -> str:
    return subprocess.run(
        cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True, **kw
    ).stdout


def psql(sql: str, dbname: str = "test") -> str:
    return subprocess.run(
        ["psql", "-qtAX", "-h", "127.0.0.1", "-U", "postgres", "-d", dbname, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@dataclass
class Server:
    """One server pinned to the service core: the service as `token-service serve` runs it
    (granian, `token_service.serve`), or a floor app under the same server without the
    service's slots; `--server gthread|sync` runs gunicorn's worker models instead."""

    app: str
    port: int
    env: dict
    chdir: Path
    logfile: Path
    is_service: bool = True
    proc: subprocess.Popen | None = None

    def command(self) -> tuple[list[str], dict]:
        workers = str(SERVICE_WORKERS[0] if self.is_service else 1)
        threads = str(SERVICE_THREADS[0] or 1)
        if SERVER[0] == "granian" and self.app == "wsgi:app":  # the service, as deployed
            env = {"HOST": "127.0.0.1", "PORT": str(self.port), "WEB_CONCURRENCY": workers}
            return [sys.executable, "-m", "token_service.serve"], env | {
                "TOKEN_SERVICE_THREADS": threads
            }
        if SERVER[0] == "granian":  # a floor: the same server, as many threads as slots
            cmd = [str(BIN / "granian"), "--interface", "wsgi", "--http", "1", "--no-ws"]
            cmd += ["--workers", workers, "--blocking-threads", threads, "--runtime-threads", "1"]
            cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
            return [*cmd, "--working-dir", str(self.chdir), self.app], {}
        cmd = [str(BIN / "gunicorn"), "-w", workers]
        if SERVER[0] == "gthread":
            cmd += ["-k", WORKER_CLASS, "--threads", threads, "--keep-alive", "5"]
        return [*cmd, "-b", f"127.0.0.1:{self.port}", "--chdir", str(self.chdir), self.app], {}

    def start(self) -> Server:
        cmd, env = self.command()
        with self.logfile.open("w") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", SERVICE_CORE, *cmd],
                env=self.env | env,
                cwd=self.chdir,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                urllib.request.urlopen(f"{self.url}/", timeout=1)
            except urllib.error.HTTPError:
                return self  # any HTTP answer: the worker is up
            except OSError:
                time.sleep(0.2)
            else:
                return self
        raise RuntimeError(f"{self.app} did not start: see {self.logfile}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    @property
    def worker(self) -> int:
        return self.workers[0]

    def cpu_seconds(self) -> float:
        """CPU time of all the workers so far."""
        total = 0
        for pid in self.workers:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.worker}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@dataclass
class Backend:
    name: str
    env: dict
    work: Path
    secrets: dict[str, str] = field(default_factory=dict)
    served: int = 0  # requests the service's worker has answered so far

    def post(self, server: Server, path: str, form: dict, auth: str | None = None) -> dict:
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(f"{server.url}{path}", data=data, method="POST")
        if auth:
            req.add_header("Authorization", auth)
        with urllib.request.urlopen(req, timeout=10) as resp:
            self.served += 1
            return json.load(resp)

    def login(self, server: Server) -> dict:
        form = {"grant_type": "password", "client_id": "storefront"}
        form |= {"username": "alice@acme.test", "password": DEMO_PASSWORD}
        return self.post(server, "/oauth/token", form)

    def basic(self, client_id: str) -> str:
        pair = f"{client_id}:{self.secrets[client_id]}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def wrk(url: str, seconds: float, script: str, env: dict, threads: int = 2) -> dict:
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", f"-t{threads}", f"-c{CONNECTIONS}"]
    cmd += [f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(HERE / script), url]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True).stdout
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    requests, errors = int(match[1]), int(match[2])
    rps, p50, p90, p99 = (float(x) for x in match.groups()[2:])
    return {"requests": requests, "errors": errors, "rps": rps, "p50_ms": p50, "p90_ms": p90} | {
        "p99_ms": p99
    }


def cpu_of(names: tuple[str, ...]) -> float:
    """CPU seconds used so far by every process whose command is one of `names` (PostgreSQL's
    backends, Redis): with the worker's own, what one request costs the whole machine."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        if head.split("(", 1)[1] in names:
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


SERVERS = {"postgres": ("postgres",), "redis": ("redis-server",)}


@dataclass
class Load:
    """One wrk load: its script, path, environment and threads; `fresh`, when given, runs before
    each wrk run (new refresh chains, one per connection, or a new token to introspect)."""

    script: str
    path: str
    env: dict
    threads: int = 2
    fresh: Callable[[], None] | None = None


def our_load(backend: Backend, server: Server, load: str) -> Load:
    """One of the service's loads (or a floor's, against the floor server)."""
    if load in ("refresh", "refresh_switch"):
        env = {"SWITCH": "1" if load == "refresh_switch" else "0"}
        env["TOKENS_FILE"] = str(backend.work / "tokens")

        def chains() -> None:
            """Fresh sessions, one per connection, logged in before the clock starts."""
            lines = [backend.login(server)["refresh_token"] for _ in range(CONNECTIONS)]
            Path(env["TOKENS_FILE"]).write_text("\n".join(lines) + "\n")

        return Load("chain.lua", "/oauth/token", env, CONNECTIONS, chains)
    if load == "password_login":
        body = "grant_type=password&client_id=storefront&username=alice%40acme.test"
        body += "&password=" + urllib.parse.quote_plus(DEMO_PASSWORD)
        return Load("post.lua", "/oauth/token", {"BODY": body})
    if load == "client_credentials":
        env = {"BODY": "grant_type=client_credentials", "AUTH": backend.basic("admin-cli")}
        return Load("post.lua", "/oauth/token", env)
    if load == "introspection":
        env = {"AUTH": backend.basic("order-service")}

        def token() -> None:
            env["BODY"] = "token=" + backend.login(server)["access_token"]

        return Load("post.lua", "/oauth/introspect", env, fresh=token)
    if load in ("bare", "sign"):
        body = "grant_type=refresh_token&refresh_token=abcdefgh"
        return Load("post.lua", f"/{load}", {"BODY": body})
    raise ValueError(f"no load {load}")


def measure(server, load: Load, seconds: float, warmup: float) -> dict:
    """A warm-up run, then the measured run with the server's CPU share (`server`: anything
    with a `url` and `cpu_seconds()`: ours, a floor, the peer)."""
    warm = 0
    if warmup:
        if load.fresh:
            load.fresh()
        warm = wrk(server.url + load.path, warmup, load.script, load.env, load.threads)["requests"]
    if load.fresh:
        load.fresh()
    cpu = server.cpu_seconds()
    servers = {name: cpu_of(names) for name, names in SERVERS.items()}
    started = time.monotonic()
    result = wrk(server.url + load.path, seconds, load.script, load.env, load.threads)
    result["worker_cpu"] = round((server.cpu_seconds() - cpu) / (time.monotonic() - started), 2)
    for name, names in SERVERS.items():
        used = cpu_of(names) - servers[name]
        result[f"{name}_cpu_ms_per_request"] = round(used * 1000 / max(result["requests"], 1), 3)
    result["warmup_requests"] = warm
    return result


def measure_ours(backend: Backend, server: Server, load: str, seconds: float, warmup: float):
    """One of our loads, counting what the service's worker has served (the memory run)."""
    result = measure(server, our_load(backend, server, load), seconds, warmup)
    if server.is_service:
        backend.served += result["requests"] + result["warmup_requests"]
    return result


def argon2_rate(seconds: float) -> dict:
    """Hashes per second of the service's own argon2id parameters, on the service core, over
    as long as a load is measured (a short window is at the mercy of a noisy neighbour)."""
    code = (
        "import time; from token_service.security import PASSWORD_HASHER as h\n"
        "h.hash('warm up'); n=0; t=time.perf_counter()\n"
        f"while time.perf_counter()-t < {seconds}: h.hash('correct horse battery staple'); n+=1\n"
        "print(n/(time.perf_counter()-t), h.time_cost, h.memory_kib, h.parallelism)"
    )
    out = subprocess.run(
        ["taskset", "-c", SERVICE_CORE, sys.executable, "-c", code],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        "rps": round(float(out[0]), 1),
        "params": {"t": int(out[1]), "m_kib": int(out[2]), "p": int(out[3])},
    }


PG_SETTINGS: list[str] = []
SERVICE_WORKERS = [1]  # the floors always run one
SERVER = ["granian"]  # as `token-service serve`; "gthread" or "sync": gunicorn's, to compare
WORKER_CLASS = "gthread"
SERVICE_THREADS = [4]  # the service's slots (granian) or gthread's threads


def service_env(work: Path, database: str | None) -> dict:
    """The service's environment: PostgreSQL `database` + Redis, or SQLite when None."""
    env = dict(os.environ)
    env |= {
        "TOKEN_SERVICE_KEYS_DIR": str(work / "keys"),
        "TOKEN_SERVICE_ISSUER": "http://bench.test",
        # The loads log the same account in thousands of times a second: not an attack here.
        "TOKEN_SERVICE_LOGIN_FREE_ATTEMPTS": "1000000",
        "PYTHONPATH": str(ROOT),
    }
    if database:
        env |= {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{database}",
            "REDIS_URL": REDIS_URL,
            "TOKEN_SERVICE_REDIS_PREFIX": f"{database}:",
        }
    else:
        env["DATABASE_URL"] = f"sqlite:///{work / 'service.sqlite3'}"
        env.pop("REDIS_URL", None)
    return env


def prepare(name: str, work: Path, database: str | None) -> Backend:
    """A fresh database (dropped first) with the schema, the demo and a new signing key."""
    if database:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql(f"CREATE DATABASE {database}")
        for setting in PG_SETTINGS:
            key, value = setting.split("=", 1)
            psql(f"ALTER DATABASE {database} SET {key} = '{value}'")
    env = service_env(work, database)
    tool = str(BIN / "token-service")
    run([tool, "keys", "generate"], env)
    run([tool, "migrate"], env)
    printed = run([tool, "demo"], env)
    secrets = dict(re.findall(r"client (\S+) secret: (\S+)", printed))
    return Backend(name, env, work, secrets)


def cpu_ms(result: dict) -> float:
    """The server's own CPU time per request."""
    return round(result["worker_cpu"] * 1000 / max(result["rps"], 0.001), 3)


def judge_round(load: str, result: dict, floor_rps: float, peer: dict | None) -> dict:
    """One round's ratios: to the floor's mean around the load, and to the peer's rps.

    Also the peer's CPU time per request over ours (above 1: ours costs less). On a quiet core
    it tells what the rps ratio tells, for a server that does not wait; on a contended core it
    is the one to read: the scheduler shares a core per thread, and the peer's signatures run
    on libuv's pool threads while our worker is one thread, so the peer gets more of the core
    (seen on this machine with node's default pool: up to 0.8-0.9 of core 0 for the peer, 0.2
    for our worker and the floors).
    """
    ratios = {"floor": TARGETS[load][0], "ratio": round(result["rps"] / floor_rps, 3)}
    ratios["p99_over_p50"] = round(result["p99_ms"] / max(result["p50_ms"], 0.001), 2)
    ratios["cpu_ms_per_request"] = cpu_ms(result)
    if peer:
        ratios["peer"] = {k: peer[k] for k in ("rps", "p50_ms", "p99_ms", "errors", "worker_cpu")}
        ratios["peer"]["cpu_ms_per_request"] = cpu_ms(peer)
        ratios["ratio_to_peer"] = round(result["rps"] / peer["rps"], 3)
        ratios["p99_to_peer"] = round(result["p99_ms"] / max(peer["p99_ms"], 0.001), 3)
        ratios["cpu_to_peer"] = round(cpu_ms(peer) / max(cpu_ms(result), 0.001), 3)
    return ratios


def summarize(backend: str, load: str, rounds: list[dict]) -> dict:
    """A load over its rounds: the medians of the per-round ratios, judged against the peer's
    target when it has one and the peer ran, else against its floor's."""
    floor, floor_target = TARGETS[load]
    if isinstance(floor_target, dict):
        floor_target = floor_target[backend]
    summary = {"backend": backend, "load": load, "rounds": len(rounds), "floor": floor}
    for key in ("rps", "p50_ms", "p99_ms", "ratio", "p99_over_p50"):
        summary[key] = round(statistics.median(r[key] for r in rounds), 3)
    summary["ratios"] = [r["ratio"] for r in rounds]
    summary["floor_target"] = floor_target
    ok = all(r["errors"] == 0 for r in rounds) and summary["p99_over_p50"] <= P99_OVER_P50
    peer_target, p99_rule = peer.TARGETS.get((backend, load), (None, False))
    if "ratio_to_peer" in rounds[0]:
        summary["ratio_to_peer"] = round(statistics.median(r["ratio_to_peer"] for r in rounds), 3)
        summary["ratios_to_peer"] = [r["ratio_to_peer"] for r in rounds]
        summary["p99_to_peer"] = round(statistics.median(r["p99_to_peer"] for r in rounds), 3)
        summary["cpu_to_peer"] = round(statistics.median(r["cpu_to_peer"] for r in rounds), 3)
        summary["peer_target"] = peer_target
        ok = ok and all(r["peer"]["errors"] == 0 for r in rounds)
    if peer_target is not None and "ratio_to_peer" in summary:
        summary["met"] = summary["ratio_to_peer"] >= peer_target and (
            not p99_rule or summary["p99_to_peer"] <= 1.0
        )
    else:  # no peer to judge by: the floor's target, as before the peer
        summary["met"] = floor_target is None or summary["ratio"] >= floor_target
    summary["ok"] = ok and summary["met"]
    return summary


def table(name: str, rows: list[dict]) -> None:
    """Per round, readable: ours, the peer's, the ratio, p50/p99 of both (on stderr)."""
    log(
        f"{name}, per round: rps, p50/p99 ms, the server's CPU share and its CPU ms per request;"
        " ratio = our rps / the peer's; cpu = the peer's CPU per request / ours; floor = our"
        " rps / the floor's"
    )

    def head(label: str) -> str:
        return f"{label + ' rps':>9}{'p50/p99':>15}{'cpu':>5}{'ms':>7}"

    def side(r: dict | None) -> str:
        if r is None:
            return f"{'-':>36}"
        times = f"{r['p50_ms']:.1f}/{r['p99_ms']:.1f}"
        return f"{r['rps']:>9.0f}{times:>15}{r['worker_cpu']:>5}{r['cpu_ms_per_request']:>7.2f}"

    log(
        f"  {'load':<19}{'round':>5} |{head('ours')} |{head('peer')} |"
        f"{'ratio':>7}{'cpu':>7}{'floor':>7}"
    )
    for r in rows:
        log(
            f"  {r['load']:<19}{r['round']:>5} |{side(r)} |{side(r.get('peer'))} |"
            f"{r.get('ratio_to_peer', '-'):>7}{r.get('cpu_to_peer', '-'):>7}{r['ratio']:>7}"
        )


def bench_backend(name: str, args, work: Path, other: peer.Peer | None) -> list[dict]:
    # Named per run: a parallel run's fresh database would be dropped from under this one.
    database = f"bench_service_{os.getpid()}" if name == "postgresql" else None
    log(f"{name}: preparing a fresh database")
    backend = prepare(name, work, database)
    floor = Server(
        "floorapp:app", free_port(), backend.env, HERE, work / "floor.log", False
    ).start()
    service = Server("wsgi:app", free_port(), backend.env, ROOT, work / "service.log").start()
    loads = args.loads.split(",")
    rows: list[dict] = []
    floors: dict[str, float] = {}
    try:

        def floor_rate(kind: str) -> float:
            if kind == "argon2id":
                result = argon2_rate(args.duration)
            else:
                result = measure(floor, our_load(backend, floor, kind), args.duration, args.warmup)
            emit({"backend": name, "load": f"floor_{kind}", **result})
            return result["rps"]

        def peer_rate(load: str) -> dict:
            spec = Load(**other.load(peer.COMPARED[load], work, CONNECTIONS))
            result = measure(other, spec, args.duration, args.warmup)
            emit({"backend": name, "load": f"peer_{peer.COMPARED[load]}", **result})
            return result

        # Each load is judged against its floor measured just before and just after it (the
        # mean of the two; one load's "after" is the next one's "before" when they share a
        # floor) and against the peer measured next to it: before it in even rounds, after it
        # in odd ones, so that a drift of the machine's speed within a round cancels out over
        # the rounds. The ratios reported are the medians of the per-round ratios.
        last = None  # the floor measured most recently
        for round_ in range(1, args.rounds + 1):
            for load in loads:
                log(f"{name}: round {round_}, {load}")
                compared = other is not None and load in peer.COMPARED
                theirs = peer_rate(load) if compared and round_ % 2 == 0 else None
                kind = TARGETS[load][0]
                before = floors[kind] if kind == last else floor_rate(kind)
                result = measure_ours(backend, service, load, args.duration, args.warmup)
                floors[kind] = after = floor_rate(kind)
                last = kind
                if compared and theirs is None:
                    theirs = peer_rate(load)
                record = {"backend": name, "load": load, "round": round_, **result}
                record |= judge_round(load, result, (before + after) / 2, theirs)
                record["floor_rps"] = [before, after]
                emit(record)
                rows.append(record)
        service.stop()
        table(name, sorted(rows, key=lambda r: (loads.index(r["load"]), r["round"])))
        records = [summarize(name, load, [r for r in rows if r["load"] == load]) for load in loads]
        for record in records:
            emit(record)
        if not args.no_memory:
            records.append(bench_memory(backend, work))
    finally:
        service.stop()
        floor.stop()
    if name == "postgresql" and not args.no_growth:
        records.append(bench_growth(args, work, floors))
    if database:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return records


def bench_memory(backend: Backend, work: Path) -> dict:
    """RSS of a fresh worker after 50,000 and 100,000 requests of the loads in turn."""
    service = Server("wsgi:app", free_port(), backend.env, ROOT, work / "memory.log").start()
    backend.served = 0
    rss = {"start": service.rss_mb()}
    loads = ["refresh_switch", "introspection", "client_credentials", "refresh"]
    rates: dict[str, float] = {}
    try:
        for mark in (50_000, 100_000):
            turn = 0
            while backend.served < mark:
                load = loads[turn % len(loads)]
                turn += 1
                left = (mark - backend.served) / rates.get(load, 500.0)
                result = measure_ours(backend, service, load, min(max(left, 1.0), 5.0), 0)
                rates[load] = max(result["rps"], 1.0)
            rss[f"after_{mark // 1000}k"] = service.rss_mb()
            rss[f"requests_{mark // 1000}k"] = backend.served
    finally:
        service.stop()
    growth = round(rss["after_100k"] - rss["after_50k"], 1)
    ok = rss["after_100k"] <= 150 and growth <= 5
    record = {"backend": backend.name, "load": "memory", "rss_mb": rss, "growth_mb": growth}
    emit(record | {"ok": ok})
    return record | {"ok": ok}


def growth_database(size: str, rebuild: bool) -> str:
    """A database with the demo and `size` of generated data, kept between runs (the large
    one takes minutes to build)."""
    customers, entities, groups = GROWTH[size]
    database = f"bench_growth_{size}"
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'")
    if exists and not rebuild:
        count = psql("SELECT count(*) FROM customers", database)
        if int(count) >= customers:
            return database
    log(f"growth: building {database} ({customers} customers, {entities} entities)")
    work = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    prepare("postgresql", work, database)
    shutil.rmtree(work)
    url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    cmd = [sys.executable, str(HERE / "growth.py"), "--database-url", url]
    cmd += ["--customers", str(customers), "--entities", str(entities), "--groups", str(groups)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    emit({"backend": "postgresql", "load": "growth_data"} | json.loads(out.splitlines()[-1]))
    return database


def bench_growth(args, work: Path, floors: dict) -> dict:
    results = {}
    for size in ("small", "large"):
        database = growth_database(size, args.rebuild_growth)
        env = prepare_existing(work, database)
        backend = Backend("postgresql", env, work)
        service = Server("wsgi:app", free_port(), env, ROOT, work / f"growth-{size}.log").start()
        try:
            result = measure_ours(backend, service, "refresh_switch", args.duration, args.warmup)
        finally:
            service.stop()
        results[size] = result
        customers = int(psql("SELECT count(*) FROM customers", database))
        sign = round(result["rps"] / floors["sign"], 3) if "sign" in floors else None
        emit(
            {"backend": "postgresql", "load": f"refresh_switch_{size}", **result}
            | {
                "customers": customers,
                "ratio_to_sign": sign,
            }
        )
    ratio = round(results["large"]["p50_ms"] / results["small"]["p50_ms"], 2)
    ok = ratio <= 1.2 and results["large"]["errors"] == 0
    record = {"backend": "postgresql", "load": "growth", "p50_large_over_small": ratio, "ok": ok}
    emit(record)
    return record


def prepare_existing(work: Path, database: str) -> dict:
    env = service_env(work, database)
    run([str(BIN / "token-service"), "migrate"], env)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured load")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per load")
    parser.add_argument("--loads", default=",".join(TARGETS), help="a subset of the loads")
    parser.add_argument("--no-growth", action="store_true", help="skip the 1M-customer run")
    parser.add_argument("--rebuild-growth", action="store_true")
    parser.add_argument("--no-memory", action="store_true", help="skip the 100k-request RSS run")
    parser.add_argument(
        "--service-workers",
        type=int,
        default=1,
        help="workers of the service, all on the service core (the targets assume 1)",
    )
    parser.add_argument(
        "--service-threads",
        type=int,
        default=4,
        help="requests run at once per worker (the service's slots; gthread's threads), of the "
        "service and the floors, as `token-service serve` runs them",
    )
    parser.add_argument(
        "--server",
        default="granian",
        choices=["granian", "gthread", "sync"],
        help="granian as `token-service serve` runs it, or gunicorn's gthread or sync workers "
        "(the models before, to compare)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the loads, alternating")
    parser.add_argument("--no-peer", action="store_true", help="skip node-oidc-provider")
    parser.add_argument(
        "--peer-pool-threads",
        type=int,
        default=1,
        help="libuv pool threads of the peer (UV_THREADPOOL_SIZE; 0: node's default, 4)",
    )
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        help="name=value set on the benchmark databases, e.g. synchronous_commit=off",
    )
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        sys.exit("bench needs wrk and taskset: apt-get install wrk util-linux")
    if os.cpu_count() < 2:
        sys.exit("bench needs two cores: one for the service, one for the load")
    PG_SETTINGS.extend(args.pg_setting)
    SERVICE_WORKERS[0] = args.service_workers
    SERVICE_THREADS[0] = args.service_threads
    SERVER[0] = args.server
    records = []
    aliases = {"pg": "postgresql", "postgres": "postgresql", "embedded": "sqlite"}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as work:
        other = None
        if not args.no_peer:
            logfile = Path(work) / "peer.log"
            other = peer.Peer(free_port(), SERVICE_CORE, logfile, args.peer_pool_threads).start()
            node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
            emit(
                {"load": "peer", "oidc_provider": peer.version(), "node": node.strip()}
                | {"pool_threads": args.peer_pool_threads or "default"}
            )
        try:
            for name in args.backends.split(","):
                name = aliases.get(name, name)
                with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
                    records += bench_backend(name, args, Path(work), other)
        finally:
            if other:
                other.stop()
    verdicts(records)
    failed = [r.get("backend", "") + ":" + r["load"] for r in records if not r["ok"]]
    emit({"summary": "pass" if not failed else "fail", "failed": failed})
    return 0


def verdicts(records: list[dict]) -> None:
    """Each judged load's median ratio against its target, met or missed by how much."""
    log("targets (medians of the per-round ratios):")
    for r in records:
        if "met" not in r:
            continue
        if r.get("peer_target") is not None:
            ratio, target, against = r["ratio_to_peer"], r["peer_target"], "peer"
        elif r["floor_target"] is not None:
            ratio, target, against = r["ratio"], r["floor_target"], r["floor"]
        else:
            continue
        verdict = "met" if r["met"] else "missed"
        if ratio < target:
            verdict += f" by {(target - ratio) / target:.0%}"
        if peer.TARGETS.get((r["backend"], r["load"]), (None, False))[1]:
            verdict += f"; p99 {r['p99_to_peer']} x the peer's (target <= 1)"
        if "cpu_to_peer" in r:
            verdict += f"; CPU per request: the peer's {r['cpu_to_peer']} x ours"
        log(
            f"  {r['backend']:<11}{r['load']:<19}{ratio:>6} x {against} (target {target})"
            f": {verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
