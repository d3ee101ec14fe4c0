"""/demo: a small browser client of the service (the demo data's `demo-web` client), to try the
whole flow by hand: sign in through the hosted pages (authorization code + PKCE), see the
decoded tokens, switch company with a refresh, sign out. Its script runs in the browser like
any single-page storefront's would; the service only serves the page."""

from __future__ import annotations

from flask import Blueprint, render_template

from ..extensions import db
from ..models import Client
from ..security import new_token

bp = Blueprint("demo_page", __name__)

DEMO_CLIENT_ID = "demo-web"


@bp.get("/demo")
def demo():
    nonce = new_token(16)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; connect-src 'self'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }
    client = db.session.get(Client, DEMO_CLIENT_ID)
    if client is None:
        message = "The demo-web client is not registered: run `token-service demo`."
        return message, 404, {**headers, "Content-Type": "text/plain; charset=utf-8"}
    page = render_template("demo.html", nonce=nonce, client_id=DEMO_CLIENT_ID, scope=client.scope)
    return page, 200, headers
