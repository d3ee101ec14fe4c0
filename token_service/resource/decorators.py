"""A Flask decorator that lets a request through only with a valid bearer token holding the
required scopes, answering RFC 6750 §3 errors otherwise."""

from __future__ import annotations

import functools

from flask import g, jsonify, request

from .verifier import InvalidToken, Verifier


def _challenge(realm: str, error: str | None = None, **params: str) -> str:
    parts = [f'realm="{realm}"']
    if error:
        parts.append(f'error="{error}"')
    parts += [f'{k}="{v}"' for k, v in params.items()]
    return "Bearer " + ", ".join(parts)


def require_scopes(verifier: Verifier, *scopes: str, realm: str = "api"):
    """Decorate a view: `g.access_token` is the verified AccessToken inside it."""
    needed = " ".join(scopes)

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                # §3.1: a request without credentials gets a challenge and no error code.
                body = {"error": "unauthorized", "message": "A bearer token is required."}
                return jsonify(body), 401, {"WWW-Authenticate": _challenge(realm)}
            try:
                access_token = verifier.verify(token.strip())
            except InvalidToken:
                challenge = _challenge(
                    realm, "invalid_token", error_description="The access token is not valid."
                )
                body = {"error": "invalid_token", "message": "The access token is not valid."}
                return jsonify(body), 401, {"WWW-Authenticate": challenge}
            if not access_token.has_scopes(*scopes):
                challenge = _challenge(realm, "insufficient_scope", scope=needed)
                body = {"error": "insufficient_scope", "message": f"Requires scope: {needed}"}
                return jsonify(body), 403, {"WWW-Authenticate": challenge}
            g.access_token = access_token
            return view(*args, **kwargs)

        return wrapped

    return decorator
