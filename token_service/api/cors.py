"""CORS (the Fetch standard's CORS protocol), for browser apps on other origins: a single-page
storefront signing in with oidc-client-ts calls discovery, the JWKS, the token endpoint and the
customer APIs from its own origin.

What each path allows (`kind_of`):
- discovery and JWKS: any origin, `Access-Control-Allow-Origin: *` on every answer (the Fetch
  standard's advice for a resource the same for every origin: always, and no `Vary`);
- token and revocation: the origins of the client the request names (form `client_id` or Basic
  credentials); a request naming none (a preflight has no body) those of any client;
- UserInfo, self-service and the Emporix customer paths: an origin of any client. These take
  bearer tokens only, never cookies, so a page can call them only with a token it already
  holds; narrowing by the token's client would guard nothing the token does not.
- nothing else: the hosted pages, the admin API and introspection send no CORS header, and a
  preflight there gets Flask's answer (no `Access-Control-Allow-*`).

On the restricted paths the answer echoes an allowed origin (never `*`), says `Vary: Origin`
always (allowed or not, with or without an `Origin`), never allows credentials, and exposes the
headers a client reads (`WWW-Authenticate`, `Retry-After`, `DPoP-Nonce`, `X-Request-Id`). Errors
carry the same headers, so that the app can read them. A preflight (`OPTIONS` with
`Access-Control-Request-Method`) is answered here, 204, with the path's methods (from Flask's URL
map), the headers the endpoints take (`Authorization`, `Content-Type`, `DPoP` reserved,
`X-Request-Id`) and a `Max-Age`; for an origin not allowed, 204 with no
`Access-Control-Allow-*`.

Allowed origins: a client's `allowed_origins`, else (NULL) the origins of its redirect URIs, kept
with the client in the client cache (clients.py), like the set for any client; both are
forgotten when a client changes. `Cors` is the WSGI layer in front of Flask; the token and
revocation POSTs, which api/front.py answers before Flask, get theirs from `token_headers`.
A request without `Origin` costs a path lookup here, and nothing on the front's hot paths but
one constant header.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from .. import logs
from ..clients import any_client_origins, load_client
from ..extensions import db
from ..oauth2.request import TokenRequest, basic_credentials

PUBLIC = "public"  # any origin: `*`
TOKEN = "token"  # the origins of the client named in the request
CUSTOMER = "customer"  # an origin of any client

_EXACT = {
    "/.well-known/openid-configuration": PUBLIC,
    "/.well-known/oauth-authorization-server": PUBLIC,
    "/jwks.json": PUBLIC,
    "/oauth/token": TOKEN,
    "/oauth/revoke": TOKEN,
    "/oauth/userinfo": CUSTOMER,
}
_PREFIXES = ("/self-service/", "/customer/", "/customerlogin/", "/iam/")

#: The headers the endpoints read: credentials, the body's type, DPoP (reserved), a request id.
ALLOW_HEADERS = "Authorization, Content-Type, DPoP, X-Request-Id"
EXPOSE_HEADERS = "WWW-Authenticate, Retry-After, DPoP-Nonce, X-Request-Id"
#: Seconds a browser may keep a preflight's answer: Chromium keeps it 2 hours at most. A client
#: that loses an origin loses it at once all the same: every actual answer is checked again.
MAX_AGE = "7200"

VARY = ("Vary", "Origin")
_ANY = [("Access-Control-Allow-Origin", "*")]
_VARY_ONLY = [VARY]
_EXPOSE = ("Access-Control-Expose-Headers", EXPOSE_HEADERS)


def kind_of(path: str) -> str | None:
    """PUBLIC, TOKEN, CUSTOMER, or None for a path that never answers another origin."""
    kind = _EXACT.get(path)
    if kind is None and path.startswith(_PREFIXES):
        return CUSTOMER
    return kind


def allowed(origin: str) -> list[tuple[str, str]]:
    """The headers of an actual answer to an allowed origin."""
    return [("Access-Control-Allow-Origin", origin), _EXPOSE, VARY]


def named_client(request: TokenRequest | None) -> str | None:
    """The client a token-endpoint request names: authenticated, in the form, or in Basic
    credentials (even ones that fail); None if it names none or could not be read."""
    if request is None:
        return None
    if request.client is not None:
        return request.client.client_id
    client_id = request.params.get("client_id")
    if client_id is None and request.authorization:
        try:
            client_id = basic_credentials(request.authorization)[0]
        except Exception:  # malformed credentials: the answer is an error anyway
            return None
    return client_id


def origins_for(request: TokenRequest | None) -> frozenset[str]:
    """The origins allowed to read the answer to a token-endpoint request (in an app
    context). With the database out, the last set read for any client stands in: the answer
    is a 503 the app should be able to read."""
    client = getattr(request, "client", None)
    if client is not None:
        return client.allowed_origins
    client_id = named_client(request)
    if client_id is None:
        return any_client_origins()
    try:
        client = load_client(client_id)
    except SQLAlchemyError:  # an outage: no second query
        db.session.rollback()
        return any_client_origins(read=False)
    return frozenset() if client is None else client.allowed_origins


def token_headers(origin: str, request: TokenRequest | None) -> list[tuple[str, str]]:
    """The CORS headers of an answer from the token or revocation endpoint to `origin`."""
    return allowed(origin) if origin in origins_for(request) else [VARY]


class Cors:
    """WSGI middleware in front of Flask: CORS headers and preflights (module docstring)."""

    def __init__(self, app: Flask, inner) -> None:
        self.app = app
        self.inner = inner

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        kind = kind_of(path)
        if kind is None:
            return self.inner(environ, start_response)
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            extra = _ANY if kind == PUBLIC else _VARY_ONLY
            return self.inner(environ, _adding(start_response, extra))
        if (
            environ.get("REQUEST_METHOD") == "OPTIONS"
            and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
        ):
            return self.preflight(path, kind, origin, start_response)
        if kind == PUBLIC:
            return self.inner(environ, _adding(start_response, _ANY))
        if kind == TOKEN:  # a POST that reached Flask, or another method (405)
            return self.inner(environ, self._token_start(origin, start_response))
        extra = allowed(origin) if self.any_client_allows(origin) else _VARY_ONLY
        return self.inner(environ, _adding(start_response, extra))

    def any_client_allows(self, origin: str) -> bool:
        with self.app.app_context():
            return origin in any_client_origins()

    def _token_start(self, origin: str, start_response):
        def start(status, headers, exc_info=None):
            with self.app.app_context():
                headers.extend(token_headers(origin, logs.current().oauth))
            return _start(start_response, status, headers, exc_info)

        return start

    def preflight(self, path: str, kind: str, origin: str, start_response):
        """204: the methods and headers the path takes, for an allowed origin; else nothing
        of CORS but `Vary`. Logged and counted under the path's rule."""
        urls = self.app.url_map.bind("cors")
        try:
            rule, _ = urls.match(path, method="OPTIONS", return_rule=True)
            logs.current().route = rule.rule
        except HTTPException:  # no such path: nothing to allow
            methods = []
        else:
            methods = sorted(set(urls.allowed_methods(path)) - {"OPTIONS"})
        if not methods:
            headers = [] if kind == PUBLIC else [VARY]
        elif kind == PUBLIC:
            headers = [("Access-Control-Allow-Origin", "*")]
        elif self.any_client_allows(origin):
            headers = [("Access-Control-Allow-Origin", origin), VARY]
        else:
            headers = [VARY]
        if headers and headers[0][0] == "Access-Control-Allow-Origin":
            headers += [
                ("Access-Control-Allow-Methods", ", ".join(methods)),
                ("Access-Control-Allow-Headers", ALLOW_HEADERS),
                ("Access-Control-Max-Age", MAX_AGE),
            ]
        start_response("204 No Content", [*headers, ("Content-Length", "0")])
        return [b""]


def _start(start_response, status, headers, exc_info):
    if exc_info is None:  # as most callers do: some servers' start_response takes two
        return start_response(status, headers)
    return start_response(status, headers, exc_info)


def _adding(start_response, extra: list[tuple[str, str]]):
    """`start_response` with `extra` headers appended to the answer's."""

    def start(status, headers, exc_info=None):
        headers.extend(extra)
        return _start(start_response, status, headers, exc_info)

    return start
