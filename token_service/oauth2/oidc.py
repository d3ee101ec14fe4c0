"""OpenID Connect claims (Core §5.1, §5.4): which claims each scope releases, for the ID token
and the UserInfo endpoint alike."""

from __future__ import annotations

from authlib.oidc.core.claims import UserInfo

from ..scopes import join_scopes


def profile_claims(customer_id: str, email: str, scopes: frozenset[str]) -> dict:
    """The standard claims the `email` and `profile` scopes release (authlib's mapping).

    The directory holds no display name, so `name` is the email address; `email_verified` is
    false because the service has never verified that the customer owns the address (an admin
    typed it)."""
    claims = UserInfo(sub=customer_id, email=email, email_verified=False, name=email)
    released = dict(claims.filter(join_scopes(scopes)))
    released.pop("sub", None)
    return released
