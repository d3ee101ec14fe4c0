"""The server of `token-service serve` and of the Docker image: granian, a WSGI server in Rust.

`python -m token_service.serve` (what `token-service serve` runs) serves `create_app()` at
$HOST:$PORT with WEB_CONCURRENCY worker processes. In each, granian reads and writes HTTP/1.1
in Rust (keep-alive; a request's head must arrive within TOKEN_SERVICE_READ_TIMEOUT seconds,
and an idle connection is closed after as long) and runs the app in a pool of Python threads:
TOKEN_SERVICE_THREADS of them run the app at once (token_service/slots.py), and up to
WAITING_THREADS more wait on slow clients' bodies (api/body.py). Why granian and not gunicorn's
gthread: docs/performance.md, "Worker model".

Metrics in multi-process mode: every worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR, and a scrape sums them (token_service.metrics). The directory is
chosen here (TOKEN_SERVICE_METRICS_DIR, else a new temporary one) and emptied of a previous run's
files before prometheus_client is first imported, in this process and so in every worker it
forks. A dead worker's live gauges are dropped by the scrape itself (metrics.drop_dead_workers),
whether it exited or crashed. With TOKEN_SERVICE_METRICS_PORT set, this main process serves
/metrics on that port, apart from the service's port.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

#: Threads per worker that may wait on clients' bodies on top of the slots: a slow client holds
#: one of these, never a slot. They are created when needed and end after 30 s idle.
WAITING_THREADS = 60


def served_app():
    """The app of one served worker: `create_app()`, and the back-channel logout tokens that a
    stopped process left due are sent now, by this worker's delivery thread (claims keep two
    workers from sending one token twice), not only at the next end of a session."""
    from token_service import create_app
    from token_service.backchannel import deliverer

    app = create_app()
    deliverer(app).kick()
    return app


def _metrics_dir() -> str:
    """TOKEN_SERVICE_METRICS_DIR (or PROMETHEUS_MULTIPROC_DIR) or a new temporary directory,
    emptied, and set as PROMETHEUS_MULTIPROC_DIR for this process and its workers only: the
    `token-service` commands run beside the server must not write into it."""
    path = (
        os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        or os.environ.get("TOKEN_SERVICE_METRICS_DIR")
        or tempfile.mkdtemp(prefix="token-service-metrics-")
    )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in Path(path).glob("*.db"):  # counters of a previous run would be summed in
        stale.unlink()
    return path


def _serve_metrics_port(host: str) -> None:
    """Serve /metrics on TOKEN_SERVICE_METRICS_PORT from this process, if set."""
    from token_service.config import Settings

    settings = Settings.from_env()
    if not settings.metrics_enabled or settings.metrics_port is None:
        return
    # Imported here: a main process that serves no metrics loads none of the service.
    from prometheus_client import multiprocess, start_http_server

    from token_service.keys import KeyRing
    from token_service.metrics import scrape_registry

    multiprocess.mark_process_dead(os.getpid())  # the import made this process a "live" series
    keyring = KeyRing(settings.keys_dir, settings.access_token_ttl_max + 60)
    start_http_server(settings.metrics_port, host, registry=scrape_registry(keyring))


def _refuse_a_taken_port(host: str, port: int) -> None:
    """Stop with one line if something listens on the port already. granian binds with
    SO_REUSEPORT, so a second `token-service serve` would otherwise start beside the first and
    share its traffic unseen (another database, other keys); a socket bound without the option
    fails while another one listens there (SO_REUSEADDR: a restart's closing connections, in
    TIME_WAIT, do not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                sys.exit(f"token-service serve: {host}:{port} is in use (another server?)")
            raise


class _NotTheThreadCountWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Configuration allows spawning up to")


def main() -> None:
    if "MALLOC_ARENA_MAX" not in os.environ:
        # glibc gives every thread that allocates an arena of its own, and keeps what is freed
        # in it: with a pool of threads a worker grew to 340 MB, against 141 MB with one arena
        # (docs/performance.md, "Memory"). glibc reads this when a process starts: start again.
        os.environ["MALLOC_ARENA_MAX"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "token_service.serve"])  # noqa: S606
    _metrics_dir()
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    from token_service.config import ConfigError, Settings
    from token_service.inputs import ascii_int

    try:  # the app's own reading of its settings: a bad one stops the server here, said once
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"token-service serve: {exc}")
    raw = os.environ.get("WEB_CONCURRENCY") or "1"
    workers = ascii_int(raw)
    if workers is None or workers < 1:
        sys.exit(f"token-service serve: WEB_CONCURRENCY must be an integer >= 1, got {raw!r}")
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))  # checked by Settings
    _refuse_a_taken_port(host, port)
    server = Granian(
        "token_service.serve:served_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=workers,
        # Python threads: the slots and the waiting ones; further requests queue in Rust.
        blocking_threads=settings.threads + WAITING_THREADS,
        runtime_threads=1,
        # In milliseconds, at most granian's 60 s.
        http1_settings=HTTP1Settings(header_read_timeout=min(settings.read_timeout, 60) * 1000),
        respawn_failed_workers=True,
        workers_kill_timeout=30,
        # The service writes one line per request itself, the path without its query: a query
        # can carry a code or an id_token_hint, and no code or token is ever logged.
        log_access=False,
    )
    # granian warns at start that this many Python threads is a lot for the cores: true of
    # threads that all run the app, not of these, which the slots bound to `threads`.
    logging.getLogger("_granian").addFilter(_NotTheThreadCountWarning())
    server.on_startup(lambda: _serve_metrics_port(host))
    server.serve()


if __name__ == "__main__":
    main()
