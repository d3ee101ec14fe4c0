"""What the request log line and the metrics cost on the hot paths, in one run.

    .venv/bin/python bench/observability.py --served [seconds per run] [rounds]
    DATABASE_URL=... REDIS_URL=... TOKEN_SERVICE_KEYS_DIR=... \\
        .venv/bin/python bench/observability.py [rounds] [requests per round]

`--served`: granian servers, one worker of four threads each, pinned to the same core as in
`make bench` (SQLite, demo data, a fresh key): the app as deployed (metrics in multi-process
mode, JSON request lines to a file) and the same app without `Observed` (`bare()` below). wrk
(bench/post.lua, 16 connections) runs introspection and client_credentials against each in turn,
A B B A, and prints for each the rps and the worker's CPU time per request, and the ratio of the
medians of the latter (observed / bare: 1.05 would be a 5 % cost). A third server, bare with the
server's access log on (as the image and `token-service serve` ran before this layer replaced
it, then under gunicorn), gives `cpu_ratio_to_access_log`. CPU time per request, not rps, is
what to compare on a shared machine: other processes on the service's core lower the rps of
every side by whatever they take, run by run.

Without `--served`, in-process:

Calls the WSGI app directly (no HTTP, no load generator) for introspection, client_credentials
and refresh with a switch, alternating rounds between the app as deployed (`Observed` around the
front: request id, JSON log line, metrics) and the front alone, so that both sides share the
machine's drift. The log lines go to a file, as they go to a pipe or file when deployed; the
metrics are in multi-process mode when PROMETHEUS_MULTIPROC_DIR is set, as when served.
Prints, per load, the median CPU time per request of each side and their ratio
(observed / bare: 1.05 would be a 5 % cost), and the microseconds the observation costs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import run as harness  # bench/run.py: its wrk driver, its pinning, the service's environment
from profile_hot_path import call  # one WSGI POST, in process

from token_service import create_app, logs
from token_service.demo import DEMO_PASSWORD, demo_secrets
from token_service.extensions import db


def bare():
    """The app without `Observed`: no request id, request line or request metrics (granian
    --factory observability:bare)."""
    app = create_app()
    app.wsgi_app = app.extensions["oauth_front"]
    return app


def served(seconds: float, rounds: int) -> None:
    """The A B B A comparison of the deployed app and `bare()` under wrk."""
    work = Path(tempfile.mkdtemp(prefix="bench-observability-"))
    env = harness.service_env(work, None)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(work / "metrics")  # as token_service.serve sets it
    (work / "metrics").mkdir()
    env["TOKEN_SERVICE_LOG_FORMAT"] = "json"
    harness.run([str(harness.BIN / "token-service"), "init"], env)
    out = harness.run([str(harness.BIN / "token-service"), "demo"], env)
    secrets = dict(re.findall(r"^client (\S+) secret: (\S+)$", out, re.MULTILINE))
    servers = {}
    for name, target, port in (
        ("observed", "wsgi:app", 8711),
        ("bare", "observability:bare", 8712),
        ("bare_access_log", "observability:bare", 8713),
    ):
        cmd = ["taskset", "-c", harness.SERVICE_CORE, str(harness.BIN / "granian")]
        cmd += ["--interface", "wsgi", "--http", "1", "--no-ws", "--workers", "1"]
        cmd += ["--blocking-threads", "4", "--runtime-threads", "1", "--port", str(port)]
        cmd += ["--working-dir", str(harness.ROOT if name == "observed" else harness.HERE)]
        if name != "observed":
            cmd += ["--factory"]
        if name == "bare_access_log":  # as the image and `serve` ran before: a line per request
            cmd += ["--access-log"]
        cmd += [target]
        log = (work / f"{name}.log").open("w")
        servers[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=log), port)
    try:
        for _, port in servers.values():
            _wait(f"http://127.0.0.1:{port}/healthz")
        basic = {
            k: "Basic " + base64.b64encode(f"{k}:{v}".encode()).decode() for k, v in secrets.items()
        }
        login = {"grant_type": "password", "client_id": "storefront"}
        login |= {"username": "alice@acme.test", "password": DEMO_PASSWORD}
        token = _post(f"http://127.0.0.1:{servers['bare'][1]}/oauth/token", login)["access_token"]
        loads = {
            "introspection": (
                "/oauth/introspect",
                {"BODY": f"token={token}", "AUTH": basic["order-service"]},
            ),
            "client_credentials": (
                "/oauth/token",
                {"BODY": "grant_type=client_credentials", "AUTH": basic["admin-cli"]},
            ),
        }
        for load, (path, load_env) in loads.items():
            rps = {name: [] for name in servers}
            cpu = {name: [] for name in servers}
            for name in servers:  # warm up
                harness.wrk(f"http://127.0.0.1:{servers[name][1]}{path}", 2, "post.lua", load_env)
            order = list(servers)
            for i in range(rounds * len(order)):
                name = (order if (i // len(order)) % 2 == 0 else order[::-1])[i % len(order)]
                url = f"http://127.0.0.1:{servers[name][1]}{path}"
                worker = _worker_cpu(servers[name][0].pid)
                result = harness.wrk(url, seconds, "post.lua", load_env)
                rps[name].append(result["rps"])
                used = _worker_cpu(servers[name][0].pid) - worker
                cpu[name].append(round(used / max(result["requests"], 1) * 1e6, 1))
            seen, plain, logged = (
                statistics.median(cpu[k]) for k in ("observed", "bare", "bare_access_log")
            )
            record = {"load": load, "served": True, "rps": rps, "worker_cpu_us": cpu}
            record["cpu_ratio"] = round(seen / plain, 4)
            record["cpu_ratio_to_access_log"] = round(seen / logged, 4)
            print(json.dumps(record), flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)


def _worker_cpu(master: int) -> float:
    """CPU seconds used so far by the workers of the server `master`."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    total = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _post(url: str, form: dict) -> dict:
    request = urllib.request.Request(url, data=urlencode(form).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main() -> None:
    if sys.argv[1:2] == ["--served"]:
        args = [float(a) for a in sys.argv[2:]]
        served(args[0] if args else 5.0, int(args[1]) if len(args) > 1 else 3)
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    app = create_app()
    log_file = tempfile.NamedTemporaryFile("w", prefix="observability-", suffix=".log")  # noqa: SIM115
    logs.configure("json", "INFO", stream=log_file)
    with app.app_context():
        secrets = demo_secrets()
        db.session.commit()
    observed, bare = app.wsgi_app, app.extensions["oauth_front"]
    login = {"grant_type": "password", "client_id": "storefront"}
    login |= {"username": "alice@acme.test", "password": DEMO_PASSWORD}
    pair = f"order-service:{secrets['order-service']}".encode()
    order_service = "Basic " + base64.b64encode(pair).decode()
    pair = f"admin-cli:{secrets['admin-cli']}".encode()
    admin_cli = "Basic " + base64.b64encode(pair).decode()
    access = call(observed, "/oauth/token", login)["access_token"]
    chain = {"rt": call(observed, "/oauth/token", login)["refresh_token"], "i": 0}

    def introspection(wsgi) -> None:
        call(wsgi, "/oauth/introspect", {"token": access}, order_service)

    def client_credentials(wsgi) -> None:
        call(wsgi, "/oauth/token", {"grant_type": "client_credentials"}, admin_cli)

    def refresh_switch(wsgi) -> None:
        chain["i"] += 1
        form = {"grant_type": "refresh_token", "client_id": "storefront"}
        form |= {
            "refresh_token": chain["rt"],
            "legal_entity_id": ("acme", "globex")[chain["i"] % 2],
        }
        chain["rt"] = call(wsgi, "/oauth/token", form)["refresh_token"]

    for load in (introspection, client_credentials, refresh_switch):
        per_request = {"observed": [], "bare": []}
        for wsgi in (observed, bare):
            for _ in range(n // 5):  # warm up
                load(wsgi)
        for i in range(rounds * 2):
            name, wsgi = [("observed", observed), ("bare", bare)][(i + i // 2) % 2]
            started = time.process_time()
            for _ in range(n):
                load(wsgi)
            per_request[name].append((time.process_time() - started) / n)
        seen, plain = (statistics.median(per_request[k]) for k in ("observed", "bare"))
        print(
            json.dumps(
                {
                    "load": load.__name__,
                    "observed_us": round(seen * 1e6, 1),
                    "bare_us": round(plain * 1e6, 1),
                    "cost_us": round((seen - plain) * 1e6, 1),
                    "ratio": round(seen / plain, 4),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
