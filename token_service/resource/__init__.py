"""Trusting the service's access tokens in a resource server, offline (DESIGN section 5).

Importable without the app or its database: it needs joserfc (authlib's JOSE library), plus
Flask for the decorator and `redis` for the optional online revocation check, each imported
only when used.

    verifier = Verifier.from_issuer("https://auth.example.com", audience="commerce-api")
    token = verifier.verify(bearer)                  # raises InvalidToken
    @require_scopes(verifier, "order.order_read_le")  # Flask: RFC 6750 errors
"""

from .verifier import (
    ALLOWED_ALGORITHMS,
    AccessToken,
    InvalidToken,
    JWKSCache,
    RevocationChecker,
    Verifier,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AccessToken",
    "InvalidToken",
    "JWKSCache",
    "RevocationChecker",
    "Verifier",
    "require_scopes",
]


def require_scopes(verifier: Verifier, *scopes: str, realm: str = "api"):
    """Flask decorator: a valid bearer token holding every scope, else RFC 6750 errors."""
    from .decorators import require_scopes as decorator

    return decorator(verifier, *scopes, realm=realm)
