"""A reference order service: trusts the token service's access tokens offline through
token_service.resource, and shows the seed's shared orders.

- GET /orders: the caller's own orders (in the legal entity the token acts for, if any);
  needs `order.history_view`.
- GET /legal-entity-orders/<legal_entity_id>: every order of that entity; needs
  `order.order_read_le` AND a token acting for exactly that entity (not its parent, not a
  subsidiary).
- GET /orders/<order_id>: one order, by the same rules.
"""

from __future__ import annotations

import os

from flask import Flask, g, jsonify

from token_service.resource import JWKSCache, RevocationChecker, Verifier, require_scopes

# Sample orders of the demo data (token_service/demo.py): alice and bob at ACME Corp, ACME
# Logistics and Globex.
ORDERS = [
    {"id": "o-1001", "legal_entity_id": "acme", "placed_by": "cus_alice", "total": "1200.00"},
    {"id": "o-1002", "legal_entity_id": "acme", "placed_by": "cus_bob", "total": "310.50"},
    {"id": "o-1003", "legal_entity_id": "acme", "placed_by": "cus_bob", "total": "89.90"},
    {"id": "o-2001", "legal_entity_id": "acme-logistics", "placed_by": "cus_bob", "total": "45.00"},
    {"id": "o-3001", "legal_entity_id": "globex", "placed_by": "cus_alice", "total": "999.00"},
]


def _visible_own(order: dict) -> bool:
    token = g.access_token
    entity = token.legal_entity_id
    return order["placed_by"] == token.sub and (
        entity is None or order["legal_entity_id"] == entity
    )


def _visible_for_entity(order: dict) -> bool:
    token = g.access_token
    return (
        "order.order_read_le" in token.scopes
        and token.legal_entity_id is not None
        and order["legal_entity_id"] == token.legal_entity_id
    )


def create_app(verifier: Verifier | None = None) -> Flask:
    """The order service; the verifier comes from the environment unless given."""
    if verifier is None:
        issuer = os.environ["ORDER_SERVICE_ISSUER"]
        redis_url = os.environ.get("REDIS_URL")
        revocation = (
            RevocationChecker(redis_url, os.environ.get("TOKEN_SERVICE_REDIS_PREFIX", "ts:"))
            if redis_url
            else None
        )
        verifier = Verifier(
            issuer.rstrip("/"),
            os.environ.get("ORDER_SERVICE_AUDIENCE", "commerce-api"),
            JWKSCache(issuer.rstrip("/") + "/jwks.json"),
            revocation=revocation,
        )
    app = Flask(__name__)

    @app.get("/orders")
    @require_scopes(verifier, "order.history_view", realm="orders")
    def own_orders():
        return jsonify(items=[o for o in ORDERS if _visible_own(o)])

    @app.get("/legal-entity-orders/<legal_entity_id>")
    @require_scopes(verifier, "order.order_read_le", realm="orders")
    def entity_orders(legal_entity_id: str):
        if g.access_token.legal_entity_id != legal_entity_id:
            body = {
                "error": "insufficient_scope",
                "message": "The token does not act for this legal entity.",
            }
            return jsonify(body), 403
        return jsonify(items=[o for o in ORDERS if o["legal_entity_id"] == legal_entity_id])

    @app.get("/orders/<order_id>")
    @require_scopes(verifier, "order.history_view", realm="orders")
    def one_order(order_id: str):
        for order in ORDERS:
            if order["id"] == order_id and (_visible_own(order) or _visible_for_entity(order)):
                return jsonify(order)
        return jsonify(error="not_found", message="No such order for this token."), 404

    return app
