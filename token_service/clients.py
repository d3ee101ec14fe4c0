"""Clients as the OAuth endpoints see them: a detached copy of the row, kept briefly per
process. The directory forgets a client here when it changes one; the protocol layer reads
through its session store, which reads here (the domain knows nothing of the protocol)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError

from .expiring import ExpiringMap
from .extensions import db
from .models import Client

#: Seconds a worker may keep using a client's row: a change (secret rotation, new ceiling,
#: deletion) reaches every worker within this time; the worker that made it sees it at once.
CLIENT_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class ClientInfo:
    """What the token endpoint needs of a client, detached from any database session."""

    client_id: str
    secret_hash: str | None
    grant_types: str
    scope: str
    first_party: bool
    audience: str | None
    access_token_ttl: int | None
    refresh_token_ttl: int | None
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    #: The origins its browser apps may call the token endpoint from (CORS, api/cors.py).
    allowed_origins: frozenset[str] = frozenset()

    @property
    def is_public(self) -> bool:
        return self.secret_hash is None


# Unknown ids count too (a scanner's guesses are answered from memory), within the bound.
_clients = ExpiringMap(maxsize=10_000, ttl=CLIENT_CACHE_SECONDS)
_MISSING = object()
# Bumped by every forget: a row read by another thread before the change is not kept after it.
_forgotten = [0]


def load_client(client_id: str) -> ClientInfo | None:
    cached = _clients.get(client_id, _MISSING)
    if cached is not _MISSING:
        return cached
    generation = _forgotten[0]
    row = db.session.get(Client, client_id)
    info = None
    if row is not None:
        info = ClientInfo(
            row.client_id,
            row.secret_hash,
            row.grant_types,
            row.scope,
            row.first_party,
            row.audience,
            row.access_token_ttl,
            row.refresh_token_ttl,
            tuple(row.redirect_uris or ()),
            tuple(row.post_logout_redirect_uris or ()),
            origins_of(row),
        )
    _clients.put(client_id, info)
    if _forgotten[0] != generation:  # a change raced this read: keep nothing from it
        _clients.pop(client_id)
    return info


def origin_of(uri: str) -> str | None:
    """The origin of an http(s) URI as a browser sends it in `Origin` (RFC 6454 §6.2: lower-case
    scheme and host, no default port), or None for any other URI."""
    parts = urlsplit(uri)
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def origins_of(row) -> frozenset[str]:
    """A client's CORS origins: its `allowed_origins`, else (NULL) its redirect URIs' origins."""
    if row.allowed_origins is not None:
        return frozenset(row.allowed_origins)
    return frozenset(filter(None, map(origin_of, row.redirect_uris or ())))


# The origins of every client, kept with the clients (a key no client id can be), and the last
# set read, which stands in while the database cannot be read.
_ANY_CLIENT = ("allowed_origins", "of any client")
_last_any = [frozenset()]


def any_client_origins(*, read: bool = True) -> frozenset[str]:
    """The origins allowed for at least one client: for CORS where the request names no client
    (a preflight has no body). An outage (or `read=False` on a miss) answers the last set read."""
    cached = _clients.get(_ANY_CLIENT)
    if cached is not None:
        return cached
    if not read:
        return _last_any[0]
    generation = _forgotten[0]
    try:
        rows = db.session.execute(select(Client.allowed_origins, Client.redirect_uris)).all()
    except SQLAlchemyError:
        return _last_any[0]
    origins = frozenset().union(*map(origins_of, rows))
    _last_any[0] = origins
    _clients.put(_ANY_CLIENT, origins)
    if _forgotten[0] != generation:  # a change raced this read: keep nothing from it
        _clients.pop(_ANY_CLIENT)
    return origins


def forget_client(client_id: str | None = None) -> None:
    """Drop a client (or all) from this worker's cache, after changing it: now, and again
    when the change commits, since another thread may read the old row in between."""
    _drop_client(client_id)
    event.listen(db.session(), "after_commit", lambda _: _drop_client(client_id), once=True)


def _drop_client(client_id: str | None) -> None:
    _forgotten[0] += 1
    if client_id is None:
        _clients.clear()
    else:
        _clients.pop(client_id)
        _clients.pop(_ANY_CLIENT)
