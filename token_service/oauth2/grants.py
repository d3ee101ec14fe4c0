"""The token endpoint's grants (RFC 6749 §4.1.3, §4.3, §4.4, §6) and the access tokens they
issue (RFC 9068). Protocol only: every read and write goes through a port: the session store
(oauth2/sessions), whose operations each commit what they write, the grace store
(oauth2/grace.py) and the login throttle (throttle.py)."""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta
from hmac import compare_digest

from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidScopeError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc7636.challenge import CODE_VERIFIER_PATTERN, create_s256_code_challenge
from authlib.oidc.core.util import create_half_hash

from .. import metrics
from ..clients import ClientInfo
from ..config import Settings
from ..entitlements import Entitlements
from ..keys import KeyRing
from ..kv import Pending, StoreUnavailable
from ..models import new_id, utcnow
from ..scopes import COMPANIES_SCOPE, effective_scopes, join_scopes, split_scopes
from ..security import hash_token, new_token
from ..throttle import LoginThrottle
from . import grace, login
from .grace import GraceStore
from .introspect import TemporarilyUnavailable
from .oidc import profile_claims
from .request import TokenRequest, authenticate_client
from .sessions import (
    CodeRow,
    LoginRow,
    NewSession,
    RefreshRow,
    Rotation,
    SessionStore,
    Superseded,
    refusal,
)

log = logging.getLogger(__name__)

GRANT_TYPE_SHAPE = re.compile(r"[A-Za-z0-9:._-]{1,128}")
#: OpenID Connect Core §11: what a third-party client must have been consented to get a
#: refresh token (first-party clients always get one).
OFFLINE_ACCESS = "offline_access"
#: The scopes whose claims (email, name) an ID token carries: a refresh reads the email then.
PROFILE_SCOPES = frozenset({"email", "profile"})
#: Runs of a grant whose write found the customer's entitlements changed since its read.
GRANT_ATTEMPTS = 3
PKCE_VERIFIER = CODE_VERIFIER_PATTERN  # RFC 7636 §4.1: 43 to 128 unreserved characters


def choose_entity(
    asked: str | None, preferred: str | None, entities: list[dict], *, new_session: bool = True
) -> str | None:
    """The entity a session acts for (DESIGN section 4): the one asked for, which must be
    assigned; else `preferred` while assigned (a new session's default entity, a refreshed
    session's current one); else, for a new session, the only assignment; else none."""
    assigned = {e["id"] for e in entities}
    if asked is not None:
        if asked not in assigned:
            raise InvalidGrantError("The customer is not assigned to that legal entity.")
        return asked
    if preferred in assigned:
        return preferred
    if new_session and len(assigned) == 1:
        return next(iter(assigned))
    return None


def retried(work):
    """Run a grant's write step; if a permission change committed between its read and its
    write (Superseded: nothing was written), again on the changed data, a few times."""
    for _ in range(GRANT_ATTEMPTS):
        try:
            return work()
        except Superseded:
            continue
    raise TemporarilyUnavailable("The customer's permissions are changing. Retry shortly.")


class TokenEndpoint:
    """POST /oauth/token, without the HTTP: a TokenRequest in, a JSON-able response out."""

    def __init__(
        self,
        settings: Settings,
        keyring: KeyRing,
        grace_store: GraceStore,
        sessions: SessionStore,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.grace_store = grace_store
        self.sessions = sessions
        self.throttle = throttle
        self.baseline = split_scopes(settings.baseline_scopes)
        self.grants = {
            "password": self.password_grant,
            "refresh_token": self.refresh_token_grant,
            "client_credentials": self.client_credentials_grant,
            "authorization_code": self.authorization_code_grant,
        }

    def handle(self, request: TokenRequest) -> dict:
        grant_type = request.require("grant_type")
        client = authenticate_client(request, self.sessions.load_client)
        grant = self.grants.get(grant_type)
        if grant is None:
            # Echo the value only if it is a plausible grant type (RFC 6749 §5.2 charset).
            shown = grant_type if GRANT_TYPE_SHAPE.fullmatch(grant_type) else "(unreadable)"
            raise UnsupportedGrantTypeError(shown)
        if grant_type not in client.grant_types.split():
            raise UnauthorizedClientError(f"The client may not use the {grant_type} grant.")
        return retried(lambda: grant(request, client))

    # -- grants --------------------------------------------------------------------------

    def password_grant(self, request: TokenRequest, client: ClientInfo) -> dict:
        """RFC 6749 §4.3, first-party clients only; the session's ceiling is fixed here.

        RFC 9700 §2.4: "The resource owner password credentials grant MUST NOT be used." It
        stays for first-party clients that have it enabled; new clients use the code flow."""
        if not client.first_party:
            raise UnauthorizedClientError("Only first-party clients may use the password grant.")
        username, password = request.require("username"), request.require("password")
        ceiling = self._narrow(split_scopes(client.scope), request.get("scope"))
        asked_entity = request.get("legal_entity_id")
        customer, entitlements = login.check_credentials(
            self.sessions, self.throttle, username, password, request.remote_addr, client.client_id
        )
        entity = choose_entity(asked_entity, customer.default_legal_entity_id, entitlements[0])
        return self.begin_session(client, customer, entitlements, ceiling, entity, utcnow())[0]

    def authorization_code_grant(self, request: TokenRequest, client: ClientInfo) -> dict:
        """RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6): the session starts as a password
        grant's does, so a later refresh with `legal_entity_id` switches company the same way.
        """
        code, verifier = request.require("code"), request.require("code_verifier")
        redirect_uri = request.require("redirect_uri")
        now = utcnow()
        sid = new_id("sid")
        found, consumed = self.sessions.consume_code(code, sid, now)
        if found is None:
            raise InvalidGrantError("The authorization code is invalid.")
        if not consumed:
            # RFC 6749 §4.1.2: "If an authorization code is used more than once, the
            # authorization server MUST deny the request and SHOULD revoke (when possible) all
            # tokens previously issued based on that authorization code."
            self._revoke_presented(
                found, "authorization_code_replay", "authorization_code.replayed"
            )
            raise InvalidGrantError("The authorization code was already used.")
        # Consumed, and committed so: a failed exchange burns the code.
        # "...ensure that the authorization code was issued to the authenticated confidential
        # client, or if the client is public, ensure that the code was issued to "client_id""
        if found.client_id != client.client_id:
            raise InvalidGrantError("The authorization code is invalid.")
        if now >= found.expires_at:
            raise InvalidGrantError("The authorization code has expired.")
        # "...ensure that the "redirect_uri" parameter is present ... and ... identical" (§4.1.3)
        if redirect_uri != found.redirect_uri:
            raise InvalidGrantError("'redirect_uri' does not match the authorization request.")
        if not PKCE_VERIFIER.fullmatch(verifier) or not compare_digest(
            create_s256_code_challenge(verifier), found.code_challenge
        ):
            raise InvalidGrantError("The code verifier does not match the code challenge.")
        ceiling = split_scopes(found.scope)

        def start() -> tuple[dict, str, LoginRow, str | None]:
            loaded = self.sessions.load_customer(found.customer_id)
            if loaded is None or loaded[0].status != "active":
                raise InvalidGrantError("The customer is blocked.")
            customer, entitlements = loaded
            entity = choose_entity(
                found.legal_entity_id, customer.default_legal_entity_id, entitlements[0]
            )
            response, access_token = self.begin_session(
                client, customer, entitlements, ceiling, entity, found.auth_time, sid=sid
            )
            return response, access_token, customer, entity

        # The code is spent: a permission change racing the session's write makes only the
        # session's part run again, never the code's.
        response, access_token, customer, entity = retried(start)
        if not client.first_party and OFFLINE_ACCESS not in ceiling:
            # OpenID Connect Core §11: a refresh token, which keeps access while the customer
            # is away, only if they consented to `offline_access`. The session still exists
            # (its sid, UserInfo, logout and revocation of this access token), unrefreshable.
            del response["refresh_token"], response["refresh_token_expires_in"]
        if "openid" in ceiling:
            response["id_token"] = self.id_token(
                client,
                customer.id,
                customer.email,
                sid,
                found.auth_time,
                entity,
                ceiling,
                nonce=found.nonce,
                access_token=access_token,
            )
        return response

    def refresh_token_grant(self, request: TokenRequest, client: ClientInfo) -> dict:
        """RFC 6749 §6 with rotation and legal-entity switching (DESIGN section 4)."""
        presented = request.require("refresh_token")
        asked_entity = request.get("legal_entity_id")
        asked_scope = request.get("scope")
        token_hash = hash_token(presented)
        params = grace.fingerprint(client.client_id, asked_entity, asked_scope)
        loaded = self.sessions.load_refresh(token_hash)
        # "...the refresh token was issued to the authenticated client" (§6): else
        # invalid_grant, in the same words as for an unknown token.
        if loaded is None or loaded[0].client_id != client.client_id:
            raise InvalidGrantError("The refresh token is invalid.")
        found, (entities, grants) = loaded
        now = utcnow()
        if found.consumed_at is not None:
            return self._reused(presented, found, params, now)
        refused = refusal(found, now)
        if refused is not None:
            raise InvalidGrantError(refused)
        try:
            entity = choose_entity(asked_entity, found.legal_entity_id, entities, new_session=False)
        except InvalidGrantError:
            # A refused switch changes nothing: the presented token stays valid.
            metrics.switch_refused()
            raise
        session_ceiling = split_scopes(found.scope)
        scope_ceiling = self._narrow(session_ceiling, asked_scope)
        if found.tokens_not_before is not None:
            # Just deny-listed (a permission change): a token stamped with the same second
            # would be refused, so issue from the next second on.
            wait = found.tokens_not_before - time.time()
            if wait > 0:
                time.sleep(wait)

        successor = new_token()
        successor_hash = hash_token(successor)
        idle_expires_at = min(
            now + timedelta(seconds=self.settings.refresh_idle_ttl), found.expires_at
        )
        response = self._customer_response(
            client,
            found.session_id,
            found.customer_id,
            found.auth_time,
            found.expires_at,
            entity,
            entities,
            grants,
            scope_ceiling,
            successor,
            now,
            idle_expires_at,
        )
        if "openid" in session_ceiling:
            # OpenID Connect Core §12.2; sealed with the rest for the grace replay below.
            response["id_token"] = self._refresh_id_token(
                client, found, entity, session_ceiling, response["access_token"]
            )
        # Kept before the rotation, under the successor's name: a concurrent loser finds
        # the winner's answer through the successor recorded on the consumed row.
        kept = self._keep_for_grace(presented, successor_hash, params, response)
        rotation = Rotation(
            session_id=found.session_id,
            old_hash=token_hash,
            new_hash=successor_hash,
            customer_id=found.customer_id,
            legal_entity_id=entity,
            previous_entity=found.legal_entity_id,
            now=now,
            idle_expires_at=idle_expires_at,
            entitlements_version=found.entitlements_version,
        )
        try:
            won = self.sessions.rotate(rotation)
        finally:
            self._kept(kept)
        if won:
            metrics.entity_switched(found.legal_entity_id, entity)
            return response
        # Lost the race to a concurrent refresh of the same token: read what it decided.
        loaded = self.sessions.load_refresh(token_hash)
        if loaded is None:  # deleted meanwhile, with its customer or client
            raise InvalidGrantError("The refresh token is invalid.")
        return self._reused(presented, loaded[0], params, utcnow())

    def client_credentials_grant(self, request: TokenRequest, client: ClientInfo) -> dict:
        """RFC 6749 §4.4: confidential clients only, for themselves; no refresh token."""
        if client.is_public:
            raise UnauthorizedClientError("Public clients may not use client_credentials.")
        scope = join_scopes(self._narrow(split_scopes(client.scope), request.get("scope")))
        access_token, expires_in = self._access_token(client, client.client_id, scope)
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope,
        }

    # -- helpers -------------------------------------------------------------------------

    def begin_session(
        self,
        client: ClientInfo,
        customer: LoginRow,
        entitlements: Entitlements,
        ceiling: frozenset[str],
        entity: str | None,
        auth_time: datetime,
        *,
        sid: str | None = None,
    ) -> tuple[dict, str]:
        """Start a refresh-token family (a login) and answer it: the token response and its
        access token. Every grant that logs a customer in goes through here. Raises
        Superseded, writing nothing, if the customer's entitlements changed since they were
        read (with `customer`)."""
        customer_id = customer.id
        entities, grants = entitlements
        now = utcnow()
        ttl = client.refresh_token_ttl or self.settings.refresh_absolute_ttl
        session = NewSession(
            id=sid or new_id("sid"),
            customer_id=customer_id,
            client_id=client.client_id,
            scope=join_scopes(ceiling),
            legal_entity_id=entity,
            auth_time=auth_time,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
            idle_expires_at=now + timedelta(seconds=min(ttl, self.settings.refresh_idle_ttl)),
        )
        refresh_token = new_token()
        response = self._customer_response(
            client,
            session.id,
            customer_id,
            auth_time,
            session.expires_at,
            entity,
            entities,
            grants,
            ceiling,
            refresh_token,
            now,
            session.idle_expires_at,
        )
        self.sessions.start_session(
            session, hash_token(refresh_token), customer.entitlements_version
        )
        return response, response["access_token"]

    def id_token(
        self,
        client: ClientInfo,
        subject: str,
        email: str,
        sid: str,
        auth_time: datetime,
        entity: str | None,
        ceiling: frozenset[str],
        *,
        nonce: str | None,
        access_token: str,
    ) -> str:
        """OpenID Connect Core §2 / §3.1.3.6: an ID token for the client (typ JWT, so that it
        is never taken for an access token)."""
        now = int(time.time())
        claims = {
            "iss": self.settings.issuer,
            "sub": subject,
            "aud": client.client_id,
            "exp": now + self.settings.access_token_ttl,
            "iat": now,
            "auth_time": int(auth_time.timestamp()),
            "sid": sid,
            "azp": client.client_id,
            "at_hash": create_half_hash(access_token, self.keyring.current.alg).decode(),
            "legal_entity_id": entity,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        claims |= profile_claims(subject, email, ceiling)
        return self.keyring.current.encode_jwt(claims, typ="JWT")

    def _refresh_id_token(
        self,
        client: ClientInfo,
        found: RefreshRow,
        entity: str | None,
        ceiling: frozenset[str],
        access_token: str,
    ) -> str:
        """OpenID Connect Core §12.2: the ID token of a refresh, "its iss Claim Value MUST be
        the same as in the ID Token issued at the time of the original authentication; its
        sub Claim Value MUST be the same ...; its iat Claim MUST represent the time that the
        new ID Token is issued; its aud Claim Value MUST be the same ...; if the ID Token
        contains an auth_time Claim, its value MUST represent the time of the original
        authentication - not the time that the new ID token is issued; its azp Claim Value
        MUST be the same". The session keeps all of these (and `sid`); `legal_entity_id` is
        the entity it acts for now and `at_hash` the new access token's. No `nonce`: a refresh is no
        authentication request, and the errata to §12.2 (OpenID Connect issue 1025) let it be
        absent though the original had one; present, it would have to be the original's.
        The claims are the session's ceiling's (a `scope` narrowing this refresh narrows the
        access token only), the email read now."""
        email = ""
        if ceiling & PROFILE_SCOPES:
            loaded = self.sessions.load_customer(found.customer_id)
            if loaded is None:  # deleted meanwhile
                raise InvalidGrantError("The refresh token is invalid.")
            email = loaded[0].email
        return self.id_token(
            client,
            found.customer_id,
            email,
            found.session_id,
            found.auth_time,
            entity,
            ceiling,
            nonce=None,
            access_token=access_token,
        )

    def _revoke_presented(
        self, found: CodeRow | RefreshRow, reason: str, action: str, **details
    ) -> None:
        """Revoke the family that a replayed code or a reused refresh token belongs to (its
        access tokens deny-listed at once), audited as `action` of the presenting client,
        committed before the error that follows."""
        presented = {"actor_type": "client", "actor_id": found.client_id}
        presented |= {"customer_id": found.customer_id, "target": found.session_id}
        self.sessions.revoke_family(
            found.session_id,
            reason,
            actor_type="system",
            actor_id=None,
            event=(action, presented | details),
        )

    @staticmethod
    def _narrow(ceiling: frozenset[str], asked: str | None) -> frozenset[str]:
        """RFC 6749 §3.3 / §6: a requested scope must lie within what may be granted."""
        if asked is None:
            return ceiling
        wanted = split_scopes(asked)
        if not wanted <= ceiling:
            raise InvalidScopeError("The requested scope exceeds what the client may hold.")
        return wanted

    def _reused(self, presented: str, found: RefreshRow, params: str, now: datetime) -> dict:
        """A consumed token again: within the grace window the same answer for the same
        request (retries, second tabs); after it, assume theft and revoke the whole family."""
        age = (now - found.consumed_at).total_seconds()
        if age <= self.settings.refresh_grace_seconds and found.revoked_at is None:
            key = grace.store_key(presented, found.successor_hash or "")
            blob = self._grace_response(key, age)
            opened = grace.open_sealed(presented, blob) if blob else None
            if opened is not None and opened[0] == params:
                metrics.grace_replayed(found.customer_id)
                return opened[1]
            raise InvalidGrantError("The refresh token was already used.")
        if found.revoked_at is None:
            self._revoke_presented(
                found,
                "refresh_token_reuse",
                "refresh_token.reuse_detected",
                consumed_seconds_ago=round(age, 3),
            )
            metrics.reuse_detected(found.customer_id)
        raise InvalidGrantError("The refresh token was already used.")

    def _grace_response(self, key: str, age: float) -> bytes | None:
        """The winner's sealed response, kept before its rotation committed."""
        try:
            return self.grace_store.fetch(key, age)
        except StoreUnavailable:
            return None

    def _keep_for_grace(
        self, presented: str, successor_hash: str, params: str, response: dict
    ) -> Pending | None:
        """Keep the grace response; the rotation may run while its write travels."""
        if self.settings.refresh_grace_seconds <= 0:
            return None
        return self.grace_store.keep(
            grace.store_key(presented, successor_hash),
            grace.seal(presented, params, response),
            self.settings.refresh_grace_seconds + 1,
        )

    @staticmethod
    def _kept(pending: Pending | None) -> None:
        try:
            if pending is not None:
                pending.wait()
        except StoreUnavailable:
            log.warning("store unavailable: no grace response kept for this rotation")

    def _access_token(
        self,
        client: ClientInfo,
        subject: str,
        scope: str,
        *,
        sid: str | None = None,
        auth_time: datetime | None = None,
        legal_entity_id: str | None = None,
    ) -> tuple[str, int]:
        """An RFC 9068 JWT access token and its lifetime in seconds."""
        ttl = client.access_token_ttl or self.settings.access_token_ttl
        now = int(time.time())
        claims = {
            "iss": self.settings.issuer,
            "sub": subject,
            "aud": client.audience or self.settings.audience,
            "exp": now + ttl,
            "iat": now,
            "jti": new_token(16),
            "client_id": client.client_id,
            "scope": scope,
        }
        if sid is not None:
            claims["sid"] = sid
            claims["auth_time"] = int(auth_time.timestamp())
            if legal_entity_id is not None:
                claims["legal_entity_id"] = legal_entity_id
        token = self.keyring.current.encode_jwt(claims)
        metrics.token_issued(subject if sid is not None else None, legal_entity_id)
        return token, ttl

    def _customer_response(
        self,
        client: ClientInfo,
        sid: str,
        customer_id: str,
        auth_time: datetime,
        expires_at: datetime,
        entity: str | None,
        entities: list[dict],
        grants: list,
        scope_ceiling: frozenset[str],
        refresh_token: str,
        now: datetime,
        idle_expires_at: datetime,
    ) -> dict:
        """The token response for a customer's session `sid`."""
        scope = effective_scopes(grants, entity, scope_ceiling, self.baseline)
        access_token, expires_in = self._access_token(
            client, customer_id, scope, sid=sid, auth_time=auth_time, legal_entity_id=entity
        )
        refresh_expires = min(idle_expires_at, expires_at)
        answer = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope,
            "refresh_token": refresh_token,
            "refresh_token_expires_in": int((refresh_expires - now).total_seconds()),
            "legal_entity_id": entity,
        }
        # The customer's other companies are theirs to release: a third-party client learns
        # them only if consented to (the session's ceiling holds the scope).
        if client.first_party or COMPANIES_SCOPE in scope_ceiling:
            answer["legal_entities"] = entities
        return answer
