"""The token endpoint's grants (RFC 6749 §4.3, §4.4, §6) and the access tokens they issue
(RFC 9068). One transaction per request: the caller commits on success and rolls back on error;
a grant commits itself only where a failure must leave a trace (audit, a revoked family)."""

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

from .. import audit, metrics
from ..config import Settings
from ..extensions import db
from ..keys import KeyRing
from ..models import Customer, Session, new_id, utcnow
from ..revocation import revoke_session
from ..scopes import effective_scopes, join_scopes, split_scopes
from ..security import hash_token, new_token
from ..store import Pending, Store, StoreUnavailable
from . import codes, grace, hotpath, login, storage
from .introspect import TemporarilyUnavailable
from .oidc import profile_claims
from .request import TokenRequest, authenticate_client
from .storage import ClientInfo

log = logging.getLogger(__name__)

GRANT_TYPE_SHAPE = re.compile(r"[A-Za-z0-9:._-]{1,128}")
#: Runs of a grant whose write found the customer's entitlements changed since its read.
GRANT_ATTEMPTS = 3
PKCE_VERIFIER = CODE_VERIFIER_PATTERN  # RFC 7636 §4.1: 43 to 128 unreserved characters


def choose_entity(asked: str | None, default: str | None, entities: list[dict]) -> str | None:
    """The entity a new session acts for: the one asked for (it must be assigned), else the
    customer's default if assigned, else the only one, else none (DESIGN section 4)."""
    assigned = {e["id"] for e in entities}
    if asked is not None:
        if asked not in assigned:
            raise InvalidGrantError("The customer is not assigned to that legal entity.")
        return asked
    if default in assigned:
        return default
    if len(assigned) == 1:
        return next(iter(assigned))
    return None


class TokenEndpoint:
    """POST /oauth/token, without the HTTP: a TokenRequest in, a JSON-able response out."""

    def __init__(self, settings: Settings, keyring: KeyRing, store: Store, throttle=None) -> None:
        self.settings = settings
        self.keyring = keyring
        self.store = store
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
        client = authenticate_client(request, storage.load_client)
        grant = self.grants.get(grant_type)
        if grant is None:
            # Echo the value only if it is a plausible grant type (RFC 6749 §5.2 charset).
            shown = grant_type if GRANT_TYPE_SHAPE.fullmatch(grant_type) else "(unreadable)"
            raise UnsupportedGrantTypeError(shown)
        if grant_type not in client.grant_types.split():
            raise UnauthorizedClientError(f"The client may not use the {grant_type} grant.")
        for _ in range(GRANT_ATTEMPTS):
            try:
                return grant(request, client)
            except hotpath.Superseded:
                # A permission change committed between the grant's read and its write (see
                # hotpath): nothing was written; again, on the changed data.
                continue
        raise _changing()

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
        customer, (entities, grants) = login.check_credentials(
            self.throttle, username, password, request.remote_addr, client.client_id
        )
        entity = choose_entity(asked_entity, customer.default_legal_entity_id, entities)
        response, _ = self.begin_session(
            client,
            customer.id,
            entities,
            grants,
            ceiling,
            entity,
            utcnow(),
            entitlements_version=customer.entitlements_version,
        )
        return response

    def authorization_code_grant(self, request: TokenRequest, client: ClientInfo) -> dict:
        """RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6): the session starts as a password
        grant's does, so a later refresh with `legal_entity_id` switches company the same way.
        """
        code, verifier = request.require("code"), request.require("code_verifier")
        redirect_uri = request.require("redirect_uri")
        now = utcnow()
        sid = new_id("sid")
        found, consumed = codes.consume_code(code, sid, now)
        if found is None:
            raise InvalidGrantError("The authorization code is invalid.")
        if not consumed:
            # RFC 6749 §4.1.2: "If an authorization code is used more than once, the
            # authorization server MUST deny the request and SHOULD revoke (when possible) all
            # tokens previously issued based on that authorization code."
            self._revoke_replayed(found)
            raise InvalidGrantError("The authorization code was already used.")
        # Consumed: kept consumed whatever follows (a failed exchange burns the code).
        db.session.commit()
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
        # The code is spent (committed above): a permission change racing the session's write
        # makes only the session's part run again, never the code's.
        for _ in range(GRANT_ATTEMPTS):
            customer = db.session.get(Customer, found.customer_id, populate_existing=True)
            if customer is None or customer.status != "active":
                raise InvalidGrantError("The customer is blocked.")
            entities, grants = storage.entitlements(customer.id)
            entity = choose_entity(
                found.legal_entity_id, customer.default_legal_entity_id, entities
            )
            try:
                response, access_token = self.begin_session(
                    client,
                    found.customer_id,
                    entities,
                    grants,
                    ceiling,
                    entity,
                    found.auth_time,
                    sid=sid,
                    entitlements_version=customer.entitlements_version,
                )
                break
            except hotpath.Superseded:
                continue
        else:
            raise _changing()
        if "openid" in ceiling:
            response["id_token"] = self.id_token(
                client,
                found.customer_id,
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
        with hotpath.begin() as hot:
            loaded = hot.load_refresh(token_hash)
            # "...the refresh token was issued to the authenticated client" (§6): else
            # invalid_grant, in the same words as for an unknown token.
            if loaded is None or loaded[0].client_id != client.client_id:
                raise InvalidGrantError("The refresh token is invalid.")
            found, (entities, grants) = loaded
            now = utcnow()
            if found.consumed_at is not None:
                return self._reused(presented, found, params, now)
            self._check_session(found, now)

            assigned = {e["id"] for e in entities}
            if asked_entity is not None:
                # A refused switch changes nothing: the presented token stays valid.
                if asked_entity not in assigned:
                    metrics.switch_refused()
                    raise InvalidGrantError("The customer is not assigned to that legal entity.")
                entity = asked_entity
            else:
                entity = found.legal_entity_id if found.legal_entity_id in assigned else None
            scope_ceiling = self._narrow(split_scopes(found.scope), asked_scope)
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
            # Kept before the rotation, under the successor's name: a concurrent loser finds
            # the winner's answer through the successor recorded on the consumed row.
            kept = self._keep_for_grace(presented, successor_hash, params, response)
            rotation = hotpath.Rotation(
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
                won = hot.rotate(rotation)
            finally:
                self._kept(kept)
            if won:
                metrics.entity_switched(found.legal_entity_id, entity)
                return response
            # Lost the race to a concurrent refresh of the same token: read what it decided.
            loaded = hot.load_refresh(token_hash)
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
        customer_id: str,
        entities: list[dict],
        grants: list,
        ceiling: frozenset[str],
        entity: str | None,
        auth_time: datetime,
        *,
        entitlements_version: int,
        sid: str | None = None,
    ) -> tuple[dict, str]:
        """Start a refresh-token family (a login) and answer it: the token response and its
        access token. Every grant that logs a customer in goes through here. Raises
        hotpath.Superseded, writing nothing, if the customer's entitlements changed since
        `entitlements_version` was read with them."""
        now = utcnow()
        ttl = client.refresh_token_ttl or self.settings.refresh_absolute_ttl
        session = {
            "id": sid or new_id("sid"),
            "customer_id": customer_id,
            "client_id": client.client_id,
            "scope": join_scopes(ceiling),
            "legal_entity_id": entity,
            "auth_time": auth_time,
            "created_at": now,
            "last_used_at": now,
            "expires_at": now + timedelta(seconds=ttl),
            "idle_expires_at": now + timedelta(seconds=min(ttl, self.settings.refresh_idle_ttl)),
        }
        refresh_token = new_token()
        response = self._customer_response(
            client,
            session["id"],
            customer_id,
            auth_time,
            session["expires_at"],
            entity,
            entities,
            grants,
            ceiling,
            refresh_token,
            now,
            session["idle_expires_at"],
        )
        login_event = audit.event(
            "login.succeeded",
            actor_type="customer",
            actor_id=customer_id,
            customer_id=customer_id,
            target=session["id"],
            client_id=client.client_id,
            legal_entity_id=entity,
        )
        with hotpath.begin() as hot:
            hot.start_session(session, hash_token(refresh_token), login_event, entitlements_version)
        return response, response["access_token"]

    def id_token(
        self,
        client: ClientInfo,
        customer_id: str,
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
            "sub": customer_id,
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
        claims |= profile_claims(customer_id, ceiling)
        return self.keyring.current.encode_jwt(claims, typ="JWT")

    def _revoke_replayed(self, found: codes.CodeRow) -> None:
        """A replayed code: revoke the family issued from it (its access tokens deny-listed
        at once), audited, committed before the error."""
        session = db.session.get(Session, found.session_id) if found.session_id else None
        if session is not None:
            revoke_session(session, "authorization_code_replay", actor_type="system", actor_id=None)
        audit.record(
            "authorization_code.replayed",
            actor_type="client",
            actor_id=found.client_id,
            customer_id=found.customer_id,
            target=found.session_id,
        )
        db.session.commit()

    @staticmethod
    def _narrow(ceiling: frozenset[str], asked: str | None) -> frozenset[str]:
        """RFC 6749 §3.3 / §6: a requested scope must lie within what may be granted."""
        if asked is None:
            return ceiling
        wanted = split_scopes(asked)
        if not wanted <= ceiling:
            raise InvalidScopeError("The requested scope exceeds what the client may hold.")
        return wanted

    def _check_session(self, found: hotpath.RefreshRow, now: datetime) -> None:
        if found.revoked_at is not None:
            raise InvalidGrantError("The session was revoked.")
        if now >= found.idle_expires_at or now >= found.expires_at:
            raise InvalidGrantError("The session has expired.")
        if found.customer_status != "active":
            raise InvalidGrantError("The customer is blocked.")

    def _reused(
        self, presented: str, found: hotpath.RefreshRow, params: str, now: datetime
    ) -> dict:
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
            session = db.session.get(Session, found.session_id)
            revoke_session(session, "refresh_token_reuse", actor_type="system", actor_id=None)
            metrics.reuse_detected(found.customer_id)
            audit.record(
                "refresh_token.reuse_detected",
                actor_type="client",
                actor_id=found.client_id,
                customer_id=found.customer_id,
                target=found.session_id,
                consumed_seconds_ago=round(age, 3),
            )
            db.session.commit()
        raise InvalidGrantError("The refresh token was already used.")

    def _grace_response(self, key: str, age: float) -> bytes | None:
        """The winner's sealed response. Its write was sent before the rotation committed,
        but travels on another connection: a loser that raced it asks once more."""
        try:
            blob = self.store.get(key)
            if blob is None and age <= 1.0:
                time.sleep(0.02)
                blob = self.store.get(key)
        except StoreUnavailable:
            return None
        return blob

    def _keep_for_grace(
        self, presented: str, successor_hash: str, params: str, response: dict
    ) -> Pending | None:
        """Send the grace response to the store; the rotation runs while it travels."""
        if self.settings.refresh_grace_seconds <= 0:
            return None
        return self.store.send_set(
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
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope,
            "refresh_token": refresh_token,
            "refresh_token_expires_in": int((refresh_expires - now).total_seconds()),
            "legal_entity_id": entity,
            "legal_entities": entities,
        }


def _changing() -> TemporarilyUnavailable:
    return TemporarilyUnavailable("The customer's permissions are changing. Retry shortly.")
