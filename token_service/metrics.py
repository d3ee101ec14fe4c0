"""Prometheus metrics: what the service counts, and the text a scrape of /metrics gets.

Under the server each worker is a process of its own. With PROMETHEUS_MULTIPROC_DIR set
(`token_service.serve` sets it), prometheus_client keeps every worker's values in memory-mapped
files there, and a scrape adds them up: /metrics answers for the whole server whichever worker
serves it. A worker that is gone takes its live gauges with it (`drop_dead_workers`). Without it
(one process: tests, `flask run`) the values live in this process. docs/operations.md lists
every metric, with example alerts.

The domain counters are incremented where each event happens (grants, revocation, throttling,
the store), each with one call to a function below, so that those modules stay about their
own job. A function that names a customer also puts them (hashed) on the request's log line.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from . import logs

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # each metric below opens its file there
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

#: Latency buckets in seconds: introspection answers in about a millisecond, a login in tens
#: (argon2id), an outage in the 0.5 s timeouts of the store or the database.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

LATENCY = Histogram(
    "token_service_request_duration_seconds",
    "HTTP requests answered and the time each took (the WSGI server's writing of the body "
    "excluded), by route, grant type and status. Its _count is the request counter.",
    ["route", "grant_type", "status"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter(
    "token_service_request_errors",
    "HTTP requests answered with an error, by route, grant type, status and error code.",
    ["route", "grant_type", "status", "error"],
)
TOKENS_ISSUED = Counter(
    "token_service_tokens_issued",
    "Access tokens signed: for a customer's session, or for a client itself.",
    ["subject"],
)
ENTITY_SWITCHES = Counter(
    "token_service_entity_switches",
    "Refreshes that moved a session to another legal entity (or to none).",
)
SWITCH_REFUSALS = Counter(
    "token_service_entity_switch_refusals",
    "Refreshes refused: the customer is not assigned to the legal entity asked for.",
)
GRACE_REPLAYS = Counter(
    "token_service_grace_replays",
    "Consumed refresh tokens presented again within the grace window: same answer again.",
)
REUSE_DETECTIONS = Counter(
    "token_service_refresh_reuse_detections",
    "Consumed refresh tokens presented after the grace window: the family was revoked.",
)
REVOCATIONS = Counter(
    "token_service_revocations",
    "Sessions and access tokens revoked, by kind and reason.",
    ["kind", "reason"],
)
LOGINS_THROTTLED = Counter(
    "token_service_logins_throttled",
    "Password logins refused with 429 because the account or address is locked.",
)
BACKEND_ERRORS = Counter(
    "token_service_backend_errors",
    "Failed calls to the database or to Redis (each failed call or lost connection once).",
    ["backend"],
)
BACKCHANNEL_LOGOUTS = Counter(
    "token_service_backchannel_logouts",
    "Back-channel logout tokens POSTed to clients, by outcome: delivered; failed (retried with "
    "backoff); abandoned (the last attempt failed); refused (the URI's address is not allowed).",
    ["outcome"],
)
DENY_LIST_COPY_LIVE = Gauge(
    "token_service_deny_list_copy_live",
    "1 while this worker's copy of the deny-list answers (its Redis subscription is live), "
    "0 while every introspection asks Redis.",
    multiprocess_mode="liveall",  # one series per live worker: a pid label
)

_latency_series: dict[tuple, object] = {}
_subject_series = {True: TOKENS_ISSUED.labels("customer"), False: TOKENS_ISSUED.labels("client")}
_copy_live: list[bool | None] = [None]


# -- events, one call where each happens -------------------------------------------------------


def request_answered(route: str, grant_type: str, status: int, error: str, seconds: float) -> None:
    """Count one HTTP request and its latency (labels are bounded by the caller)."""
    key = (route, grant_type, status)
    series = _latency_series.get(key)
    if series is None:  # labels() validates and locks: resolve each combination once
        series = _latency_series[key] = LATENCY.labels(route, grant_type, str(status))
    series.observe(seconds)
    if error:
        ERRORS.labels(route, grant_type, str(status), error).inc()


def token_issued(customer_id: str | None, legal_entity_id: str | None) -> None:
    """An access token was signed, for a customer (their id) or for a client (None)."""
    _subject_series[customer_id is not None].inc()
    if customer_id is not None:
        logs.current().customer(customer_id, legal_entity_id)


def entity_switched(previous: str | None, current: str | None) -> None:
    """A refresh rotated a session: counted as a switch if its legal entity changed."""
    if previous != current:
        ENTITY_SWITCHES.inc()


def switch_refused() -> None:
    """A refresh asked for a legal entity the customer is not assigned to."""
    SWITCH_REFUSALS.inc()


def grace_replayed(customer_id: str) -> None:
    """A consumed refresh token, within the grace window, got its successor's answer again."""
    GRACE_REPLAYS.inc()
    logs.current().customer(customer_id, None)


def reuse_detected(customer_id: str) -> None:
    """A consumed refresh token came back after the grace window: its family is revoked."""
    REUSE_DETECTIONS.inc()
    logs.current().customer(customer_id, None)


def revoked(kind: str, reason: str) -> None:
    """A session ("session") or one access token ("access_token") was revoked."""
    REVOCATIONS.labels(kind, reason).inc()


def login_throttled() -> None:
    """A password login was refused because its account or address is locked."""
    LOGINS_THROTTLED.inc()


def backchannel_logout(outcome: str) -> None:
    """A back-channel logout attempt ended: "delivered", "failed", "abandoned" or "refused"."""
    BACKCHANNEL_LOGOUTS.labels(outcome).inc()


def backend_error(backend: str) -> None:
    """A call to "database" or "redis" failed."""
    BACKEND_ERRORS.labels(backend).inc()


def deny_list_copy(live: bool) -> None:
    """This worker's copy of the deny-list answers (True) or not; called on every read, so the
    gauge's file is written only when the state changes."""
    if live is not _copy_live[0]:
        _copy_live[0] = live
        DENY_LIST_COPY_LIVE.set(1 if live else 0)


# -- exposition --------------------------------------------------------------------------------


class SigningKeyCollector:
    """Age of the signing key and how many keys are published, read from the key ring at scrape
    time (the key files are shared by every worker, so no worker needs to report them)."""

    def __init__(self, keyring) -> None:
        self.keyring = keyring

    def collect(self):
        age = GaugeMetricFamily(
            "token_service_signing_key_age_seconds",
            "Age of the key that signs now (absent while there is none).",
        )
        published = GaugeMetricFamily(
            "token_service_signing_keys", "Keys in the keys directory, newest (signing) first."
        )
        try:
            keys = self.keyring.all_keys()
        except Exception:  # an unreadable key file: /readyz says so; the scrape still answers
            keys = []
        if keys:
            age.add_metric([], time.time() - keys[0].created_at.timestamp())
        published.add_metric([], len(keys))
        yield age
        yield published


def multiprocess_dir() -> str | None:
    """The directory shared by the workers, if metrics are kept per process in files."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_registry(keyring) -> CollectorRegistry:
    """What a scrape reads: every worker's files (or this process), and the signing keys."""
    if multiprocess_dir() is None:
        registry = CollectorRegistry()
        registry.register(_ProcessMetrics())
    else:
        registry = CollectorRegistry()
        registry.register(_LiveWorkers(None))
    registry.register(SigningKeyCollector(keyring))
    return registry


def drop_dead_workers(path: str) -> None:
    """Forget the live gauges (one series per pid) of workers that are no longer running,
    whether they exited or crashed: their counters stay summed in, as they should."""
    for name in os.listdir(path):
        if not name.startswith("gauge_live"):
            continue
        pid = int(name.rsplit("_", 1)[1].split(".")[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:  # alive, another user's
            pass


class _LiveWorkers(multiprocess.MultiProcessCollector):
    """Every worker's files, the dead workers' live gauges dropped first."""

    def collect(self):
        drop_dead_workers(self._path)
        return super().collect()


class _ProcessMetrics:
    """This process's own metrics (the default registry), for a single-process service."""

    def collect(self):
        yield from REGISTRY.collect()


def exposition(keyring) -> tuple[str, bytes]:
    """(content type, body) of a scrape."""
    return CONTENT_TYPE_LATEST, generate_latest(scrape_registry(keyring))
