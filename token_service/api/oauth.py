"""The OAuth endpoints: token (RFC 6749), introspection (RFC 7662) and revocation (RFC 7009).
Each request is one unit of work, committed only on success."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError

from ..extensions import db
from ..oauth2.request import TokenRequest, parse_form
from .errors import NO_STORE

log = logging.getLogger(__name__)

bp = Blueprint("oauth", __name__, url_prefix="/oauth")


def token_request() -> TokenRequest:
    """Parse the body once, bounded: never more than the limit is read."""
    limit = current_app.config["SETTINGS"].max_form_bytes
    body = request.stream.read(limit + 1)
    params = parse_form(request.content_type, body, limit)
    return TokenRequest(
        params=params,
        authorization=request.headers.get("Authorization"),
        remote_addr=request.remote_addr,
    )


def run_once_more_on_lost_connection(work, *args):
    """Run `work`; if the database connection turned out dead (a database restart, a failover),
    roll back and run it once more on a fresh connection. Safe: the failed attempt committed
    nothing, or, for a rotation that committed as its connection died, the retry is a replay
    that the grace window answers with the same response."""
    try:
        return work(*args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("database connection lost; retrying once on a new one")
        db.session.rollback()
        return work(*args)


def _commit(work, *args):
    result = work(*args)
    db.session.commit()
    return result


@bp.post("/token")
def token():
    handle = current_app.extensions["token_endpoint"].handle
    response = run_once_more_on_lost_connection(_commit, handle, token_request())
    return jsonify(response), 200, NO_STORE


@bp.post("/introspect")
def introspect():
    work = current_app.extensions["introspection"].introspect
    answer = run_once_more_on_lost_connection(work, token_request())
    if db.session.registry.has():  # read-only; most answers never open an ORM session
        db.session.rollback()
    return jsonify(answer), 200, NO_STORE


@bp.post("/revoke")
def revoke():
    work = current_app.extensions["introspection"].revoke
    run_once_more_on_lost_connection(_commit, work, token_request())
    return "", 200, NO_STORE
