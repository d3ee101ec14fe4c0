"""The floors: a bare POST endpoint, and one that parses the form, signs one RS256 JWT of the
service's shape with the service's key and returns a random token."""

import os
import secrets
import time
from pathlib import Path

from flask import Flask, request

from token_service.keys import KeyRing

app = Flask("floor")
key = KeyRing(Path(os.environ["TOKEN_SERVICE_KEYS_DIR"]), 3600).current


@app.post("/bare")
def bare():
    return {"ok": True}


@app.post("/sign")
def sign():
    form = request.form
    now = int(time.time())
    claims = {
        "iss": "http://x",
        "sub": form.get("refresh_token", "s")[:8],
        "aud": "commerce-api",
        "exp": now + 300,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": "storefront",
        "scope": "a.b c.d e.f",
        "sid": "sid_x",
        "auth_time": now,
        "legal_entity_id": "acme",
    }
    return {"access_token": key.encode_jwt(claims), "refresh_token": secrets.token_urlsafe(32)}
