"""The peer of `make bench`: node-oidc-provider (bench/peer/server.js) on the service's core.

It does the service's job minus legal entities: rotating refresh tokens, RS256 JWT access
tokens for a default resource, client_credentials, introspection of its own opaque access
token, all in its in-memory adapter. bench/run.py measures its loads alternating with ours, in
the same run, with the same wrk scripts (bench/chain.lua, bench/post.lua): its token and
introspection endpoints are mounted at the service's paths.

Refresh chains are made before the clock starts, one authorization-code flow with PKCE per
chain (a fresh browser session each, so each chain is its own grant, as each of our logins is
its own session); the peer's interaction route logs the bench account in with no password.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

DIR = Path(__file__).resolve().parent / "peer"
API = "urn:commerce-api"
API_SCOPES = (
    "approval.approval_manage approval.approval_manage_own approval.approval_read "
    "approval.approval_read_own customer.customer_read_own customer.customerprofile_edit "
    "customer.customerprofile_view customermanagement.legalentity_read_own "
    "iam.assignment_create_own iam.assignment_delete_own order.history_view order.order_create "
    "order.order_read_le quote.quote_manage_own quote.quote_read_own"
)
CALLBACK = "http://127.0.0.1/callback"

# Our load -> the peer's load it is compared with, and the targets (issue 18): the minimum
# ratio ours / peer's per backend, and whether our p99 must be at most the peer's.
COMPARED = {
    "refresh": "refresh",
    "refresh_switch": "refresh",
    "client_credentials": "client_credentials",
    "introspection": "introspection",
}
TARGETS = {
    ("postgresql", "refresh_switch"): (1.0, True),
    ("sqlite", "refresh_switch"): (1.2, False),
    ("postgresql", "client_credentials"): (1.0, False),
    ("sqlite", "client_credentials"): (1.0, False),
    ("postgresql", "introspection"): (1.5, False),
    ("sqlite", "introspection"): (1.5, False),
}


def version() -> str:
    """The installed oidc-provider's version."""
    package = DIR / "node_modules" / "oidc-provider" / "package.json"
    return json.loads(package.read_text())["version"]


def install() -> None:
    """`npm ci` from bench/peer/package-lock.json, once (node_modules is not committed)."""
    if (DIR / "node_modules" / "oidc-provider").is_dir():
        return
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("the peer needs node and npm (or run with --no-peer)")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=DIR, check=True
    )


class Browser:
    """Just enough of a user agent for one authorization-code flow: its own cookies, and
    redirects followed by hand up to the client's callback."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        for header in resp.headers.get_all("Set-Cookie") or []:
            name, value = header.split(";", 1)[0].split("=", 1)
            self.cookies[name] = value
        conn.close()
        return resp, data

    def authorize(self, query: dict) -> str:
        """The authorization code the flow ends with."""
        location = "/auth?" + urllib.parse.urlencode(query)
        for _ in range(5):
            resp, data = self.request("GET", location)
            if resp.status not in (302, 303):
                raise RuntimeError(f"peer authorization: {resp.status} {data[:300]!r}")
            location = resp.headers["Location"]
            if location.startswith(CALLBACK):
                params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
                if "code" not in params:
                    raise RuntimeError(f"peer authorization: {params}")
                return params["code"]
            location = re.sub(r"^https?://[^/]+", "", location)
        raise RuntimeError("peer authorization: too many redirects")


@dataclass
class Peer:
    """One node process pinned to `core`; the same interface as bench/run.py's Server."""

    port: int
    core: str
    logfile: Path
    pool_threads: int = 1
    secret: str = ""
    proc: subprocess.Popen | None = None
    is_service: bool = False

    def start(self) -> Peer:
        install()
        self.secret = secrets.token_urlsafe(24)
        env = {**os.environ, "PORT": str(self.port), "PEER_CLIENT_SECRET": self.secret}
        env["NODE_ENV"] = "production"
        # jose signs through WebCrypto, whose jobs run on libuv's pool threads. On one core
        # more threads cannot add throughput, but on a core that others share they win the
        # peer a larger share of it than our one worker thread gets: measured here, under the
        # other engineers' load, 0.3-0.8 of core 0 with node's default 4 threads, 0.25-0.3
        # with 1, against our worker's 0.2. One thread compares the servers, not the scheduler.
        if self.pool_threads:
            env["UV_THREADPOOL_SIZE"] = str(self.pool_threads)
        cmd = ["taskset", "-c", self.core, "node", str(DIR / "server.js")]
        with self.logfile.open("w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=DIR)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                Browser(self.port).request("GET", "/.well-known/openid-configuration")
            except OSError:
                time.sleep(0.2)
            else:
                return self
        raise RuntimeError(f"the peer did not start: see {self.logfile}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU time of the node process so far, all its threads (libuv's pool signs the JWTs)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def basic(self, client_id: str) -> str:
        pair = f"{client_id}:{self.secret}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def login(self, scope: str, resource: str | None) -> dict:
        """One authorization-code flow with PKCE in a fresh session; the token response."""
        browser = Browser(self.port)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {"client_id": "storefront", "response_type": "code", "redirect_uri": CALLBACK}
        query |= {"scope": scope, "state": secrets.token_urlsafe(8)}
        query |= {"code_challenge": challenge.rstrip(b"=").decode()}
        query["code_challenge_method"] = "S256"
        if resource:
            query["resource"] = resource
        code = browser.authorize(query)
        form = {"grant_type": "authorization_code", "client_id": "storefront", "code": code}
        form |= {"redirect_uri": CALLBACK, "code_verifier": verifier}
        resp, data = Browser(self.port).request(
            "POST", "/oauth/token", urllib.parse.urlencode(form)
        )
        if resp.status != 200:
            raise RuntimeError(f"peer code exchange: {resp.status} {data[:300]!r}")
        return json.loads(data)

    def load(self, name: str, work: Path, connections: int) -> dict:
        """The wrk load `name` against the peer: script, path, env, threads, and `fresh`, which
        makes a run's chains (or token) anew before each run (bench/run.py's Load)."""
        if name == "refresh":
            env = {"SWITCH": "0", "TOKENS_FILE": str(work / "peer-tokens")}

            def chains() -> None:
                tokens = [self.login(API_SCOPES, API)["refresh_token"] for _ in range(connections)]
                Path(env["TOKENS_FILE"]).write_text("\n".join(tokens) + "\n")

            return dict(script="chain.lua", path="/oauth/token", env=env, threads=connections) | {
                "fresh": chains
            }
        if name == "client_credentials":
            body = "grant_type=client_credentials&scope=order.order_read_le+quote.quote_read_own"
            env = {"BODY": body, "AUTH": self.basic("admin-cli")}
            return dict(script="post.lua", path="/oauth/token", env=env)
        if name == "introspection":
            env = {"AUTH": self.basic("order-service")}

            def token() -> None:
                # openid and no resource: the access token is the userinfo audience's, opaque.
                env["BODY"] = "token=" + self.login("openid", None)["access_token"]

            return dict(script="post.lua", path="/oauth/introspect", env=env, fresh=token)
        raise ValueError(f"the peer has no load {name}")
