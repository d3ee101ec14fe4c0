"""gunicorn settings of the service: `gunicorn -c python:token_service.gunicorn_conf wsgi:app`
(what `token-service serve` and the Docker image run).

Metrics in multi-process mode: every worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR, and a scrape sums them (token_service.metrics). This file is read by
gunicorn's arbiter before any worker is forked, so it is where the directory is chosen
(TOKEN_SERVICE_METRICS_DIR, else a new temporary one) and emptied of a previous run's files: it
must be set before prometheus_client is first imported, in the arbiter and so in every worker.
When a worker exits, its live gauges are dropped (`child_exit`). With TOKEN_SERVICE_METRICS_PORT
set, the arbiter serves /metrics on that port, apart from the service's port.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _metrics_dir() -> str:
    """TOKEN_SERVICE_METRICS_DIR (or PROMETHEUS_MULTIPROC_DIR) or a new temporary directory,
    emptied, and set as PROMETHEUS_MULTIPROC_DIR for this arbiter and its workers only: the
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


_metrics_dir()

# After the directory is set: prometheus_client chooses its storage when first imported.
from prometheus_client import multiprocess  # noqa: E402

from token_service.config import Settings  # noqa: E402

#: gunicorn's own access log stays off: the service writes one line per request itself.
accesslog = None


def child_exit(server, worker) -> None:
    """A worker is gone: its live gauges (one series per pid) go with it."""
    multiprocess.mark_process_dead(worker.pid)


def when_ready(server) -> None:
    """Serve /metrics on TOKEN_SERVICE_METRICS_PORT from the arbiter, if set."""
    settings = Settings.from_env()
    if not settings.metrics_enabled or settings.metrics_port is None:
        return
    # Imported here: an arbiter that serves no metrics loads none of the service.
    from prometheus_client import start_http_server

    from token_service.keys import KeyRing
    from token_service.metrics import scrape_registry

    multiprocess.mark_process_dead(os.getpid())  # the import made the arbiter a "live" series
    keyring = KeyRing(settings.keys_dir, settings.access_token_ttl_max + 60)
    # The service's own interface (127.0.0.1 for `token-service serve`, all in the image).
    bind = server.cfg.bind[0] if server.cfg.bind else "unix:"
    host = "127.0.0.1" if bind.startswith(("unix:", "fd:")) else bind.rsplit(":", 1)[0].strip("[]")
    start_http_server(settings.metrics_port, host, registry=scrape_registry(keyring))
    server.log.info("metrics at http://%s:%s/metrics", host, settings.metrics_port)
