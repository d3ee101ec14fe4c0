"""The OAuth endpoints: token (RFC 6749), with introspection (RFC 7662) and revocation
(RFC 7009). Each request is one transaction, committed only on success."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from ..extensions import db
from ..oauth2.request import TokenRequest, parse_form
from .errors import NO_STORE

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


@bp.post("/token")
def token():
    response = current_app.extensions["token_endpoint"].handle(token_request())
    db.session.commit()
    return jsonify(response), 200, NO_STORE


@bp.post("/introspect")
def introspect():
    answer = current_app.extensions["introspection"].introspect(token_request())
    db.session.rollback()  # read-only
    return jsonify(answer), 200, NO_STORE


@bp.post("/revoke")
def revoke():
    current_app.extensions["introspection"].revoke(token_request())
    db.session.commit()
    return "", 200, NO_STORE
