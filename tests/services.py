"""PostgreSQL and Redis for the suite: those at the configured URLs, or throwaway ones.

tests/conftest.py calls `arrange(os.environ)` before anything reads TEST_POSTGRES_URL or
TEST_REDIS_URL. For each server, when one answers at its URL (defaults: database `test` at
127.0.0.1:5432, user postgres; Redis at 127.0.0.1:6379) the suite uses it. When none does, a
throwaway one is started on a free port from Debian's binaries: a PostgreSQL cluster in a
temporary directory (initdb, trust auth, database `test`; run as the `postgres` user when we
are root, since initdb refuses root) and `redis-server` without persistence. The variable then
points at it, for this process and its children (pytest-xdist's workers), and it is stopped and
removed when the run ends (pytest_unconfigure; if pytest dies, the parent-death signal stops it).

`make test` first runs `python tests/services.py --install`: as root with apt, it installs what
is missing (Debian's `chromium`, `postgresql` and `redis-server`: the binaries, which the suite
starts throwaway servers from); otherwise, and for Node 20+, it says in one line what to run.

    python tests/services.py --check     # what a run would use; starts and installs nothing
    python tests/services.py --install   # install what is missing (apt, as root)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CHROMIUM = "/usr/bin/chromium"
#: Set once a process has arranged the servers: its children (xdist's workers) inherit them.
ARRANGED = "TS_TEST_SERVICES_ARRANGED"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class Unavailable(RuntimeError):
    """No server answers and no throwaway one can be started; the message says what to do."""


def postgres_url(environ) -> str:
    return environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def redis_url(environ) -> str:
    return environ.get("TEST_REDIS_URL") or DEFAULT_REDIS_URL


def _libpq(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://...) as libpq reads it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True) if "://" in url else url


def postgres_problem(url: str) -> str | None:
    """None when PostgreSQL answers at `url` (a SQLAlchemy URL), else why not."""
    try:
        with psycopg.connect(_libpq(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, ValueError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def redis_problem(url: str) -> str | None:
    """None when Redis answers PING at `url`, else why not."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path | None:
    """Debian's newest PostgreSQL binaries (/usr/lib/postgresql/<version>/bin), if any."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def redis_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/sbin/redis-server" if os.path.exists("/usr/sbin/redis-server") else None
    )


def _as(user: pwd.struct_passwd | None, dying: str) -> list[str]:
    """The prefix that runs a server as `user` (None: as ourselves), sent the signal `dying`
    if the process that started it dies (a killed pytest leaves no server behind). setpriv
    (util-linux, in every Debian) sets that signal after changing user, which clears it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if user is not None:
            raise Unavailable("running as root and no setpriv to run PostgreSQL as postgres")
        return []
    ids = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"] if user else []
    return [setpriv, *ids, f"--pdeathsig={dying}", "--"]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Throwaway:
    """A server started for this run: its process, its directory, the URL to give the suite."""

    name: str
    url: str
    process: subprocess.Popen
    directory: Path
    stop_signal: int = signal.SIGTERM

    @property
    def port(self) -> int:
        return make_url(self.url).port

    def stop(self) -> None:
        """Stop it (its signal, then SIGKILL if it lingers) and remove its directory."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.directory, ignore_errors=True)


def _wait(process: subprocess.Popen, log: Path, what: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"{what} exited {process.returncode} at start:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    process.kill()
    raise Unavailable(f"{what} did not answer within {START_TIMEOUT:.0f} s:\n{_tail(log)}")


def start_redis() -> Throwaway:
    """redis-server on a free port of 127.0.0.1, nothing saved, in the foreground."""
    binary = redis_binary()
    if binary is None:
        raise Unavailable("redis-server is not installed: apt-get install -y redis-server")
    directory = Path(tempfile.mkdtemp(prefix="ts-test-redis-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = directory / "redis.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*_as(None, "TERM"), binary, "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(directory)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Throwaway("Redis", url, process, directory)
    try:
        _wait(process, log, "redis-server", lambda: redis_problem(url) is None)
    except BaseException:
        server.stop()
        raise
    return server


def _postgres_user() -> pwd.struct_passwd | None:
    """Whom initdb and postgres run as: ourselves (None), or, as root, which initdb refuses,
    the `postgres` user of Debian's package."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise Unavailable("running as root and no `postgres` user to run PostgreSQL as")


def start_postgres() -> Throwaway:
    """A cluster of its own (initdb, trust auth) on a free port of 127.0.0.1, with a database
    `test`, in a temporary directory; `postgres` runs in the foreground."""
    bindir = postgres_bindir()
    if bindir is None:
        raise Unavailable(
            "no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb): "
            "apt-get install -y postgresql"
        )
    user = _postgres_user()
    # SIGINT: the "fast" shutdown, clients disconnected (SIGTERM would wait for them).
    prefix = _as(user, "INT")
    directory = Path(tempfile.mkdtemp(prefix="ts-test-pg-", dir="/tmp" if user else None))
    if user is not None:
        os.chown(directory, user.pw_uid, user.pw_gid)
    data = directory / "data"
    log = directory / "postgres.log"
    with open(log, "wb") as out:
        init = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            check=False, timeout=120,
        )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise Unavailable(f"initdb exited {init.returncode}:\n{_tail(log)}")
    port = free_port()
    admin = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            cwd=directory, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Throwaway("PostgreSQL", admin, process, directory, stop_signal=signal.SIGINT)
    try:
        _wait(process, log, "postgres", lambda: postgres_problem(admin) is None)
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")
    except BaseException:
        server.stop()
        raise
    server.url = admin.rsplit("/", 1)[0] + "/test"
    return server


@dataclass
class Arrangement:
    """What `arrange` did: the throwaway servers it started, and lines saying so."""

    started: list[Throwaway] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()


def arrange(environ: MutableMapping[str, str]) -> Arrangement:
    """Point TEST_POSTGRES_URL and TEST_REDIS_URL in `environ` at servers that answer: the
    configured ones, or throwaway ones started now (stopped by `Arrangement.stop`, or at exit).
    Raises `Unavailable` when neither is possible. Once per process tree (`ARRANGED`)."""
    done = Arrangement()
    if environ.get(ARRANGED):
        return done
    atexit.register(done.stop)
    checks = [
        ("TEST_POSTGRES_URL", "PostgreSQL", postgres_url, postgres_problem, start_postgres),
        ("TEST_REDIS_URL", "Redis", redis_url, redis_problem, start_redis),
    ]
    try:
        for variable, name, configured, problem, start in checks:
            url = configured(environ)
            why = problem(url)
            if why is None:
                continue
            try:
                server = start()
            except Unavailable as exc:
                raise Unavailable(
                    f"{name} does not answer at {_shown(url)} ({why}), and no throwaway "
                    f"{name} could be started: {exc}"
                ) from None
            done.started.append(server)
            environ[variable] = server.url
            done.lines.append(
                f"{name} does not answer at {_shown(url)}: using a throwaway {name} at "
                f"{_shown(server.url)} for this run ({server.directory}, removed after it)"
            )
    except BaseException:
        done.stop()
        raise
    environ[ARRANGED] = "1"
    return done


# -- make test: install what is missing (Debian), or say what to run --------------------------


def _can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(packages: list[str], updated: list[bool]) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run = {"env": env, "check": False, "stdin": subprocess.DEVNULL}
    if not updated:
        subprocess.run(["apt-get", "update", "-qq"], **run)
        updated.append(True)
    print(f"tests/services.py: installing Debian's {' '.join(packages)}", flush=True)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], **run
    )
    return done.returncode == 0


def install_missing() -> int:
    """Install with apt what the suite needs and lacks; one line per thing it cannot."""
    missing = 0
    updated: list[bool] = []
    # The servers' binaries even where servers answer: tests/test_services.py starts throwaway
    # ones to prove that a fresh machine's run can.
    wanted = [
        ("chromium", lambda: os.access(CHROMIUM, os.X_OK), "the browser tests fail"),
        ("postgresql", lambda: postgres_bindir() is not None, "the PostgreSQL tests fail"),
        ("redis-server", lambda: redis_binary() is not None, "the Redis tests fail"),
    ]
    for package, present, otherwise in wanted:
        if present():
            continue
        if _can_apt() and _apt_install([package], updated) and present():
            continue
        missing += 1
        how = "apt-get install failed" if _can_apt() else "not root, or no apt-get"
        print(
            f"tests/services.py: {package} is missing ({how}): run "
            f"`sudo apt-get install -y {package}`; until then {otherwise}.",
            flush=True,
        )
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing += 1  # Debian 12's nodejs is 18: too old to install from here
        print(
            "tests/services.py: node and npm (Node 20+) are missing: install them "
            "(https://nodejs.org); until then the Node tests fail.",
            flush=True,
        )
    return missing


def check(environ=os.environ) -> int:
    """Say what a run would use, starting nothing; 1 if it could not get both servers."""
    status = 0
    for name, url, problem, can_start in (
        ("PostgreSQL", postgres_url(environ), postgres_problem, postgres_bindir),
        ("Redis", redis_url(environ), redis_problem, redis_binary),
    ):
        why = problem(url)
        if why is None:
            print(f"{name}: answers at {_shown(url)}")
        elif can_start():
            print(f"{name}: nothing answers at {_shown(url)} ({why}): a throwaway one would run")
        else:
            print(f"{name}: nothing answers at {_shown(url)} ({why}) and no binaries to start one")
            status = 1
    print(f"chromium: {'present' if os.access(CHROMIUM, os.X_OK) else 'missing'} ({CHROMIUM})")
    print(f"node: {shutil.which('node') or 'missing'}, npm: {shutil.which('npm') or 'missing'}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="say what a run would use")
    mode.add_argument("--install", action="store_true", help="install what is missing (apt)")
    args = parser.parse_args(argv)
    if args.install:
        install_missing()  # the tests say the rest: they fail where something is missing
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
