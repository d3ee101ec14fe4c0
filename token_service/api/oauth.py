"""The OAuth endpoints: token (RFC 6749), introspection (RFC 7662) and revocation (RFC 7009).

A POST to them is answered by api/front.py before Flask routes it (they are the hot paths).
The rules here put them on Flask's URL map all the same: other methods get Flask's 405, and
a POST that reaches Flask without the front is answered by it as well."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

bp = Blueprint("oauth", __name__, url_prefix="/oauth")


def _through_front():
    front = current_app.extensions["oauth_front"]
    status, body, headers = front.answer(front.routes[request.path], request.environ)
    return (jsonify(body) if body is not None else ""), status, headers


for _name in ("token", "introspect", "revoke"):
    bp.add_url_rule(f"/{_name}", _name, _through_front, methods=["POST"])
