"""Token introspection (RFC 7662) and revocation (RFC 7009), for access and refresh tokens."""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749.errors import OAuth2Error

from ..clients import ClientInfo
from ..expiring import ExpiringMap
from ..keys import KeyRing
from ..kv import StoreUnavailable
from ..models import utcnow
from ..scopes import effective_scopes, split_scopes
from ..security import hash_token
from .request import TokenRequest, authenticate_client
from .sessions import SessionStore, refusal

INTROSPECT_SCOPE = "token.introspect"
SESSION_STATE_SECONDS = 1.0
INACTIVE = {"active": False}


class InsufficientScope(OAuth2Error):
    """The client authenticated but may not introspect."""

    error = "insufficient_scope"
    status_code = 403


class TemporarilyUnavailable(OAuth2Error):
    error = "temporarily_unavailable"
    status_code = 503

    def get_headers(self):
        return [*super().get_headers(), ("Retry-After", "1")]


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class Introspection:
    """POST /oauth/introspect and POST /oauth/revoke without the HTTP."""

    def __init__(self, settings, keyring: KeyRing, sessions: SessionStore) -> None:
        self.settings = settings
        self.keyring = keyring
        self.sessions = sessions
        self.baseline = split_scopes(settings.baseline_scopes)
        # The database's view of a session, briefly: revocations show at once through the
        # deny-list, checked on every request; the database is the backstop for a store that
        # lost entries, and that backstop may lag by this long.
        self._sessions = ExpiringMap(maxsize=10_000, ttl=SESSION_STATE_SECONDS)

    # -- RFC 7662 -----------------------------------------------------------------------

    def introspect(self, request: TokenRequest) -> dict:
        client = authenticate_client(request, self.sessions.load_client)
        # "the authorization server MUST require some form of authorization to access this
        # endpoint" (RFC 7662 §2.1): here, a confidential client holding token.introspect.
        if client.is_public or INTROSPECT_SCOPE not in client.scope.split():
            raise InsufficientScope("The client may not introspect tokens.")
        token = request.require("token")
        hint = request.get("token_type_hint")
        order = [self._access, lambda token: self._refresh(token, client)]
        if hint == "refresh_token" or not _looks_like_jwt(token):
            order.reverse()
        for lookup in order:
            answer = lookup(token)
            if answer is not None:
                return answer
        return dict(INACTIVE)

    def live_access_token(self, token: str) -> dict | None:
        """The active answer for a live access token of ours, else None: introspection's own
        check, deny-list and session state included. Raises TemporarilyUnavailable."""
        answer = self._access(token) if _looks_like_jwt(token) else None
        return answer if answer is not None and answer["active"] else None

    def _access(self, token: str) -> dict | None:
        """Active claims of a live access token; {"active": false} if ours but not live;
        None if it is not one of our access tokens at all."""
        claims = self.keyring.decode(token) if _looks_like_jwt(token) else None
        if claims is None:
            return None
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]  # typed by decode()
        if claims.get("iss") != self.settings.issuer or exp <= time.time():
            return dict(INACTIVE)
        sid = claims.get("sid")
        try:
            if self.sessions.is_denied(sid, jti, iat):
                return dict(INACTIVE)
        except StoreUnavailable:
            # Never call a possibly deny-listed token active: fail closed, and say so.
            raise TemporarilyUnavailable("Revocation state is unavailable.") from None
        if self.sessions.load_client(str(claims.get("client_id"))) is None:
            return dict(INACTIVE)  # a deleted client's tokens die with it
        if sid is not None and not self._customer_token_live(claims, iat):
            return dict(INACTIVE)
        return {
            "active": True,
            "token_type": "Bearer",
            "scope": claims.get("scope", ""),
            "client_id": claims.get("client_id"),
            "sub": claims.get("sub"),
            "exp": exp,
            "iat": iat,
            "iss": claims.get("iss"),
            "aud": claims.get("aud"),
            "jti": jti,
            "sid": sid,
            "legal_entity_id": claims.get("legal_entity_id"),
        }

    def _customer_token_live(self, claims: dict, iat: int) -> bool:
        """The session lives, the customer is active and still assigned to the token's entity.
        The deny-list says the same in the normal case; the database is asked too because it is
        the truth when the store has lost entries."""
        key = (str(claims["sid"]), claims.get("legal_entity_id"))
        state = self._sessions.get(key)
        if state is None:
            state = self.sessions.session_state(*key)
            if state is not None:
                self._sessions.put(key, state)
        if state is None or refusal(state, utcnow()) is not None:
            return False
        # The database's copy of the deny-list cut-off: holds even if the store lost its entry.
        if state.tokens_not_before is not None and iat < state.tokens_not_before:
            return False
        return bool(state.assigned)

    def _refresh(self, token: str, client: ClientInfo) -> dict | None:
        """A live refresh token, to the client that holds it only; its `scope` is what the
        customer holds now in the session's entity, never the session's ceiling."""
        token_hash = hash_token(token)
        loaded = self.sessions.load_refresh(token_hash)
        if loaded is None:
            return None
        found, (entities, grants) = loaded
        # Refresh tokens are "intended for use only with authorization servers and are never
        # sent to resource servers" (RFC 6749 §1.5), and "the authorization server MAY respond
        # differently to different protected resources making the same request" (RFC 7662
        # §4): a resource server presenting one gets what an unknown token gets.
        if found.client_id != client.client_id:
            return dict(INACTIVE)
        entity = found.legal_entity_id
        if (
            found.consumed_at is not None
            or refusal(found, utcnow()) is not None
            or (entity is not None and entity not in {e["id"] for e in entities})
        ):
            return dict(INACTIVE)
        expires = min(found.expires_at, found.idle_expires_at)
        return {
            "active": True,
            "token_type": "refresh_token",
            # The same function as the next refresh: what its access token would carry.
            "scope": effective_scopes(grants, entity, split_scopes(found.scope), self.baseline),
            "client_id": found.client_id,
            "sub": found.customer_id,
            "exp": int(expires.timestamp()),
            "iat": int(found.created_at.timestamp()),
            "iss": self.settings.issuer,
            "aud": self.settings.issuer,  # its one audience: this server's token endpoint
            "jti": token_hash[:32],  # names it without revealing it: its hash, as stored
            "sid": found.session_id,
            "legal_entity_id": entity,
        }

    # -- RFC 7009 -----------------------------------------------------------------------

    def revoke(self, request: TokenRequest) -> None:
        """Revoke a token the authenticated client holds. Unknown, invalid, expired or another
        client's tokens are answered like success: "invalid tokens do not cause an error
        response" (RFC 7009 §2.2), and nothing tells a caller whether a token exists."""
        client = authenticate_client(request, self.sessions.load_client)
        token = request.require("token")
        if request.get("token_type_hint") == "refresh_token" or not _looks_like_jwt(token):
            self._revoke_refresh(client, token) or self._revoke_access(client, token)
        else:
            self._revoke_access(client, token) or self._revoke_refresh(client, token)

    def _revoke_refresh(self, client: ClientInfo, token: str) -> bool:
        loaded = self.sessions.load_refresh(hash_token(token))
        if loaded is None:
            return False
        found = loaded[0]
        if found.client_id == client.client_id:
            # "If the particular token is a refresh token ... the authorization server SHOULD
            # also invalidate all access tokens based on the same authorization grant" (§2.1).
            self.sessions.revoke_family(
                found.session_id,
                "revoked_by_client",
                actor_type="client",
                actor_id=client.client_id,
            )
        return True

    def _revoke_access(self, client: ClientInfo, token: str) -> bool:
        claims = self.keyring.decode(token) if _looks_like_jwt(token) else None
        if claims is None:
            return False
        if (
            claims.get("client_id") == client.client_id
            and claims.get("iss") == self.settings.issuer
        ):
            ttl = claims["exp"] - int(time.time()) + 1  # typed by decode()
            jti = claims["jti"]
            if ttl > 0 and not self.sessions.deny_access_token(jti, ttl, "revoked_by_client"):
                raise TemporarilyUnavailable("The token could not be revoked. Retry shortly.")
            self.sessions.record(
                "access_token.revoked",
                actor_type="client",
                actor_id=client.client_id,
                customer_id=claims.get("sid") and claims.get("sub"),
                target=jti,
            )
        return True
