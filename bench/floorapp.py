"""The floors: a bare POST endpoint, and one that parses the form, signs one RS256 JWT of the
service's shape with the service's key and returns a random token.

Plain WSGI, no framework: a floor is the least any server must do for the request under the
same server setup. The service answers its OAuth endpoints without Flask's request machinery
(token_service/api/front.py), so a Flask floor would no longer be a floor.
"""

import json
import os
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qsl

from token_service.keys import KeyRing

key = KeyRing(Path(os.environ["TOKEN_SERVICE_KEYS_DIR"]), 3600).current
HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


def _form(environ) -> dict[str, str]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return dict(parse_qsl(environ["wsgi.input"].read(min(length, 4096)).decode()))


def bare(environ) -> dict:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    return {"ok": True}


def sign(environ) -> dict:
    form = _form(environ)
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


ROUTES = {"/bare": bare, "/sign": sign}


def app(environ, start_response):
    route = ROUTES.get(environ.get("PATH_INFO", ""))
    if route is None or environ.get("REQUEST_METHOD") != "POST":
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    body = json.dumps(route(environ), separators=(",", ":")).encode()
    start_response("200 OK", [*HEADERS, ("Content-Length", str(len(body)))])
    return [body]
