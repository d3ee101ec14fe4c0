"""Clients as the OAuth endpoints see them: a detached copy of the row, kept briefly per
process. The directory forgets a client here when it changes one; the protocol layer reads
through its session store, which reads here (the domain knows nothing of the protocol)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import event

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
        )
    _clients.put(client_id, info)
    if _forgotten[0] != generation:  # a change raced this read: keep nothing from it
        _clients.pop(client_id)
    return info


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
