"""An Emporix-compatible customer API: a storefront written against Emporix's customer-management
and IAM services logs in, switches company and manages its company's group members here with
no change but the base URL (README "Coming from Emporix").

A translation layer only. Logins and refreshes are token-endpoint requests for the storefront
client (`TokenEndpoint.handle`: throttling, rotation, grace, reuse detection, company switch);
tokens are checked by introspection's live check; logout is `revoke_session`; the group
operations are `company`'s self-service functions with their rules. What is Emporix's here is
the URL, the parameter names, the response shapes and the error shapes:

- customer-management errors: `{"status", "type", "message", "details"?}`;
- IAM errors: `{"code", "status", "message", "details"}`;
- a 401 carries both its layer's fields and the `{"fault": {...}}` object Emporix's gateway
  answers with, so that a storefront reading either finds what it looks for.

One deployment serves one tenant (`TOKEN_SERVICE_TENANT`); any other tenant is a 404.

Anonymous tokens (`/customerlogin/auth/anonymous/...`) name a storefront visit, not a customer.
They are JWTs of type `anon+jwt` signed with the key ring: `KeyRing.decode` accepts only
`at+jwt`, so introspection, self-service, the admin API and resource servers never take one for
an access token; only this layer reads them, to authorize a login.
"""

from __future__ import annotations

import logging
import time
from http import HTTPStatus

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError, IntegrityError
from werkzeug.exceptions import BadRequest

from .. import company, entitlements
from ..clients import load_client
from ..directory import DirectoryError
from ..extensions import db
from ..keys import NoSigningKey
from ..models import Customer, Session, new_id
from ..oauth2.introspect import TemporarilyUnavailable
from ..oauth2.request import DEFAULT_MAX_LENGTH, MAX_PARAM_LENGTH, TokenRequest
from ..revocation import revoke_session
from ..security import hash_token, new_token
from ..store import StoreUnavailable
from ..throttle import TooManyAttempts
from .admin.errors import ApiError
from .front import run_once_more_on_lost_connection
from .self_service import customer_actor

bp = Blueprint("emporix", __name__)
log = logging.getLogger(__name__)

ANONYMOUS_TYP = "anon+jwt"
ANONYMOUS_REFRESH_TTL = 86400
ANONYMOUS_CUSTOMER = "00000000"  # Emporix's customer number for a visitor
MAX_ID_LENGTH = 64
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class EmporixError(Exception):
    """An answer other than success on this layer, rendered in its path's error shape."""

    def __init__(
        self, status: int, message: str, *, kind: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or _KINDS.get(status, "error")
        self.headers = headers or {}


_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "resource_not_found",
    409: "conflict",
    429: "too_many_requests",
    503: "service_unavailable",
}


def _settings():
    return current_app.config["SETTINGS"]


def _is_iam() -> bool:
    return request.path.startswith("/iam/")


def error_body(status: int, message: str, kind: str, *, iam: bool) -> dict:
    """The error shape of Emporix's IAM service or of its customer-management service."""
    if iam:
        body = {"code": status, "status": HTTPStatus(status).phrase, "message": message}
        body["details"] = [message]
    else:
        body = {"status": status, "type": kind, "message": message}
    if status == 401:
        # Emporix's gateway answers a 401 with this object.
        body["fault"] = {"faultstring": message, "detail": {"errorcode": f"emporix.{kind}"}}
    return body


def _error_response(error: EmporixError):
    try:
        db.session.rollback()
    except DBAPIError:
        log.debug("rollback failed", exc_info=True)
    body = error_body(error.status, error.message, error.kind, iam=_is_iam())
    return jsonify(body), error.status, {**NO_STORE, **error.headers}


@bp.errorhandler(EmporixError)
def emporix_error(error: EmporixError):
    return _error_response(error)


@bp.errorhandler(ApiError)
def api_error(error: ApiError):
    """Self-service's token check (customer_actor) speaks the admin API's errors: reshaped."""
    headers = {k: v for k, v in error.headers.items() if k != "WWW-Authenticate"}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="emporix"'
    return _error_response(EmporixError(error.status, error.message, headers=headers))


@bp.errorhandler(DirectoryError)
def directory_error(error: DirectoryError):
    """company's rules: 403 (scope, escalation), 404 (not in the company), 409 (last admin),
    429 and 503 from the invitation limiter."""
    headers = {}
    if isinstance(error, company.RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, company.Unavailable):
        headers["Retry-After"] = "1"
    return _error_response(EmporixError(error.status, str(error), headers=headers))


@bp.errorhandler(OAuth2Error)
def oauth_error(error: OAuth2Error):
    """The token endpoint's refusals: bad credentials and bad refresh tokens are a 401, a
    throttled login a 429 with Retry-After, an outage a 503, anything else the request's fault."""
    message = error.description or error.error
    headers = {}
    if isinstance(error, TooManyAttempts):
        status, headers["Retry-After"] = 429, str(error.retry_after)
    elif isinstance(error, TemporarilyUnavailable):
        status, headers["Retry-After"] = 503, "1"
    elif error.error in ("invalid_grant", "invalid_client", "unauthorized_client"):
        status = 401
    else:
        status = 400
    return _error_response(EmporixError(status, message, headers=headers))


@bp.errorhandler(IntegrityError)
def integrity_error(error: IntegrityError):
    """A concurrent request won a uniqueness race: the conflict the check would have given."""
    return _error_response(EmporixError(409, "The change conflicts with the current data."))


@bp.errorhandler(DBAPIError)
@bp.errorhandler(NoSigningKey)
def unavailable(error: Exception):
    """The database or the signing key is missing: the app's 503, in this layer's shape."""
    log.error("emporix layer unavailable: %s", error.__class__.__name__)
    return _error_response(
        EmporixError(
            503, "The service is unavailable. Retry shortly.", headers={"Retry-After": "1"}
        )
    )


@bp.errorhandler(BadRequest)
def bad_request(error: BadRequest):
    return _error_response(EmporixError(400, "The request body is not valid JSON."))


def _json(body, status: int = 200):
    response = jsonify(body)
    response.status_code = status
    response.headers.update(NO_STORE)
    return response


# -- what every request carries ---------------------------------------------------------------


def _check_tenant(tenant: str | None) -> None:
    if tenant != _settings().tenant:
        raise EmporixError(404, "The tenant does not exist.", kind="resource_not_found")


def _query(name: str, *, required: bool = True) -> str | None:
    """A query parameter, bounded as the token endpoint bounds its own; blank means omitted."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise EmporixError(400, f"'{name}' is repeated.")
    value = values[0] if values else ""
    _bounded(name, value)
    if value == "":
        if required:
            raise EmporixError(400, f"Missing '{name}' parameter.")
        return None
    return value


def _bounded(name: str, value: str, limit_name: str | None = None) -> None:
    limit = MAX_PARAM_LENGTH.get(limit_name or name, DEFAULT_MAX_LENGTH)
    if len(value) > limit:
        raise EmporixError(400, f"'{name}' is too long.")
    if "\x00" in value:
        raise EmporixError(400, f"'{name}' contains a NUL character.")


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise EmporixError(
            401,
            "A bearer token is required.",
            headers={"WWW-Authenticate": 'Bearer realm="emporix"'},
        )
    return token


def _unauthorized(message: str) -> EmporixError:
    return EmporixError(401, message, headers={"WWW-Authenticate": 'Bearer realm="emporix"'})


def _live_customer_claims(token: str) -> dict:
    """Introspection's live check of a customer access token (deny-list, session, customer,
    assignment), or a 401; 503 when revocation state is unreadable (fail closed)."""
    try:
        claims = current_app.extensions["introspection"].live_access_token(token)
    except TemporarilyUnavailable:
        raise EmporixError(
            503, "Revocation state is unavailable. Retry shortly.", headers={"Retry-After": "1"}
        ) from None
    if claims is None or not claims.get("sid"):
        raise _unauthorized("The access token is invalid, expired or revoked.")
    return claims


def _token_request(params: dict[str, str | None]) -> TokenRequest:
    params = {k: v for k, v in params.items() if v is not None}
    params["client_id"] = _settings().emporix_client_id
    return TokenRequest(params=params, remote_addr=request.remote_addr)


def _grant(params: dict[str, str | None]) -> dict:
    """One token-endpoint request for the storefront client, committed as /oauth/token's."""
    endpoint = current_app.extensions["token_endpoint"]

    def work(token_request: TokenRequest) -> dict:
        answer = endpoint.handle(token_request)
        db.session.commit()
        return answer

    return run_once_more_on_lost_connection(work, _token_request(params))


def _customer_token(answer: dict) -> dict:
    """A token-endpoint answer in Emporix's shape (RefreshCustomerToken)."""
    claims = current_app.extensions["keyring"].decode(answer["access_token"]) or {}
    return {
        "access_token": answer["access_token"],
        "expires_in": answer["expires_in"],
        "refresh_token": answer["refresh_token"],
        "refresh_token_expires_in": answer["refresh_token_expires_in"],
        "token_type": answer["token_type"],
        "session_id": claims.get("sid"),
    }


def _with_tenant(scope: str) -> str:
    """Emporix's scope strings name the tenant as one more entry: on this layer only."""
    return " ".join(filter(None, [scope, f"tenant={_settings().tenant}"]))


# -- anonymous tokens -------------------------------------------------------------------------


def _anonymous_key(refresh_token: str) -> str:
    return f"emporix:anonymous:{hash_token(refresh_token)}"


def _anonymous_answer(session_id: str, refresh_token: str, refresh_expires_in: int) -> dict:
    settings = _settings()
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "sub": session_id,
        "aud": f"{settings.issuer}/customer/{settings.tenant}",
        "exp": now + settings.anonymous_token_ttl,
        "iat": now,
        "jti": new_token(16),
        "client_id": settings.emporix_client_id,
        "scope": f"tenant={settings.tenant}",
        "token_use": "anonymous",
    }
    token = current_app.extensions["keyring"].current.encode_jwt(claims, typ=ANONYMOUS_TYP)
    return {
        "token_type": "Bearer",
        "access_token": token,
        "expires_in": settings.anonymous_token_ttl,
        "refresh_token": refresh_token,
        "refresh_token_expires_in": refresh_expires_in,
        "sessionId": session_id,
        "scope": claims["scope"],
    }


def anonymous_claims(token: str) -> dict | None:
    """The claims of a live anonymous token of this deployment, else None."""
    settings = _settings()
    claims = current_app.extensions["keyring"].decode(token, typ=ANONYMOUS_TYP)
    if (
        claims is None
        or claims.get("token_use") != "anonymous"
        or claims.get("iss") != settings.issuer
        or claims.get("aud") != f"{settings.issuer}/customer/{settings.tenant}"
        or type(claims.get("exp")) is not int
        or claims["exp"] <= time.time()
    ):
        return None
    return claims


def _require_anonymous() -> dict:
    claims = anonymous_claims(_bearer())
    if claims is None:
        raise _unauthorized("An anonymous access token is required.")
    return claims


def _storefront_client() -> None:
    client_id = _query("client_id")
    _bounded("client_id", client_id)
    if client_id != _settings().emporix_client_id or load_client(client_id) is None:
        raise _unauthorized("Unknown client_id.")


def _store_call(work, *args):
    try:
        return work(*args)
    except StoreUnavailable:
        raise EmporixError(
            503, "The session store is unavailable. Retry shortly.", headers={"Retry-After": "1"}
        ) from None


@bp.get("/customerlogin/auth/anonymous/login")
def anonymous_login():
    """A visitor's anonymous token: a new anonymous session, its access and refresh tokens."""
    _check_tenant(_query("tenant"))
    _storefront_client()
    session_id, refresh_token = new_id("anon"), new_token()
    store = current_app.extensions["token_store"]
    _store_call(
        store.set, _anonymous_key(refresh_token), session_id.encode(), ANONYMOUS_REFRESH_TTL
    )
    return _json(_anonymous_answer(session_id, refresh_token, ANONYMOUS_REFRESH_TTL))


@bp.get("/customerlogin/auth/anonymous/refresh")
def anonymous_refresh():
    """A new anonymous access token for the same anonymous session (its refresh token stays)."""
    _check_tenant(_query("tenant"))
    _storefront_client()
    refresh_token = _query("refresh_token")
    store = current_app.extensions["token_store"]
    key = _anonymous_key(refresh_token)
    session_id = _store_call(store.get, key)
    if session_id is None:
        raise _unauthorized("The refresh token is invalid or expired.")
    remaining = max(1, _store_call(store.ttl, key))
    return _json(_anonymous_answer(session_id.decode(), refresh_token, remaining))


# -- customer login, refresh, logout, validation ----------------------------------------------


def _login_body() -> tuple[str, str]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise EmporixError(400, "The request body must be a JSON object.")
    values = []
    for name, limit in (("email", "username"), ("password", "password")):
        value = body.get(name)
        if not isinstance(value, str) or value == "":
            raise EmporixError(400, f"'{name}' is required and must be a string.")
        _bounded(name, value, limit)
        values.append(value)
    return values[0], values[1]


@bp.post("/customer/<tenant>/login")
def login(tenant: str):
    """The password grant for the storefront client, answered as Emporix's CustomerToken."""
    _check_tenant(tenant)
    _require_anonymous()
    email, password = _login_body()
    answer = _grant({"grant_type": "password", "username": email, "password": password})
    token = _customer_token(answer)
    # No separate SaaS token here: the access token carries the customer (`sub`).
    token["saas_token"] = answer["access_token"]
    # Emporix's schema types it as a string (its example shows a boolean): the schema is the
    # contract. Passwords are the customer's own here (set at activation), never an employee's.
    token["initialPassword"] = "false"
    return _json(token)


def _refresh_authorized() -> None:
    """Emporix asks for the anonymous token here; a storefront may send the customer's
    (possibly expired) access token instead, which is ours if its signature is."""
    token = _bearer()
    if anonymous_claims(token) is None and current_app.extensions["keyring"].decode(token) is None:
        raise _unauthorized("An anonymous or customer access token is required.")


@bp.get("/customer/<tenant>/refreshauthtoken")
def refresh_auth_token(tenant: str):
    """The refresh grant with optional company switch, exactly as /oauth/token runs it."""
    _check_tenant(tenant)
    _refresh_authorized()
    refresh_token = _query("refreshToken")
    _bounded("refreshToken", refresh_token, "refresh_token")
    entity = _query("legalEntityId", required=False)
    if entity is not None:
        _bounded("legalEntityId", entity, "legal_entity_id")
    answer = _grant(
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "legal_entity_id": entity}
    )
    return _json(_customer_token(answer))


@bp.get("/customer/<tenant>/logout")
def logout(tenant: str):
    """Revoke the session of `accessToken` (its access tokens are deny-listed at once)."""
    _check_tenant(tenant)
    caller = _live_customer_claims(_bearer())
    presented = _query("accessToken")
    _bounded("accessToken", presented, "token")
    claims = _live_customer_claims(presented)
    if claims["sub"] != caller["sub"]:
        raise EmporixError(403, "The access token belongs to another customer.")
    session = db.session.get(Session, claims["sid"])
    revoke_session(session, "logout", actor_type="customer", actor_id=claims["sub"])
    db.session.commit()
    return "", 204, NO_STORE


@bp.get("/customer/<tenant>/validateauthtoken")
def validate_auth_token(tenant: str):
    """The live customer access token's details (ValidateTokenResponse), else 401."""
    _check_tenant(tenant)
    claims = _live_customer_claims(_bearer())
    customer = db.session.get(Customer, claims["sub"])
    db.session.rollback()
    answer = {
        "token_type": "Bearer",
        "expires_in": max(0, claims["exp"] - int(time.time())),
        "scope": _with_tenant(claims["scope"]),
        "sessionId": claims["sid"],
        "email": customer.email if customer else None,
    }
    if claims.get("legal_entity_id"):
        answer["legalEntityId"] = claims["legal_entity_id"]
    return _json(answer)


@bp.get("/customer/<tenant>/me")
def me(tenant: str):
    """The customer's profile fields that this service holds; a visitor's with an anonymous
    token."""
    _check_tenant(tenant)
    token = _bearer()
    if anonymous_claims(token) is not None:
        return _json(
            {
                "id": ANONYMOUS_CUSTOMER,
                "customerNumber": ANONYMOUS_CUSTOMER,
                "firstName": "Anonymous",
                "lastName": "Anonymous",
                "accounts": [],
            }
        )
    claims = _live_customer_claims(token)
    customer = db.session.get(Customer, claims["sub"])
    entities, _ = entitlements.of(claims["sub"])
    db.session.rollback()
    if customer is None:
        raise _unauthorized("The access token is invalid, expired or revoked.")
    return _json(
        {
            "id": customer.id,
            "customerNumber": customer.id,
            "contactEmail": customer.email,
            "accounts": [{"id": customer.email}],
            "businessModel": "B2B" if entities else "B2C",
            "b2b": {"legalEntities": [{"id": e["id"], "name": e["name"]} for e in entities]},
        }
    )


# -- IAM: the company's groups and their members (company.py's rules) ------------------------


def _path_id(value: str, what: str) -> str:
    if len(value) > MAX_ID_LENGTH or any(ord(c) < 32 for c in value):
        raise EmporixError(404, f"{what} not found")
    return value


def _group_document(group) -> dict:
    """Emporix's group document; `accessControls` are not modelled (scopes are ours)."""
    return {
        "id": group.id,
        "name": {"en": group.name},
        "code": group.code,
        "userType": "CUSTOMER",
        "b2b": {"legalEntityId": group.legal_entity_id},
        "metadata": {
            "version": group.version,
            "createdAt": group.created_at.isoformat().replace("+00:00", "Z"),
            "modifiedAt": group.updated_at.isoformat().replace("+00:00", "Z"),
        },
    }


def _assignment_id(group_id: str, customer_id: str) -> str:
    return f"{group_id}:{customer_id}"


@bp.get("/iam/<tenant>/groups")
def list_groups(tenant: str):
    """The groups of the token's legal entity (company.groups)."""
    _check_tenant(tenant)
    items = [_group_document(group) for group, _ in company.groups(customer_actor())]
    db.session.rollback()
    return _json(items)


@bp.get("/iam/<tenant>/groups/<group_id>/users")
def list_group_users(tenant: str, group_id: str):
    """The members of one of the entity's groups (company.groups and company.members)."""
    _check_tenant(tenant)
    group_id = _path_id(group_id, "group")
    actor = customer_actor()
    if group_id not in {group.id for group, _ in company.groups(actor)}:
        raise EmporixError(404, "group not found")
    items = [
        {
            "id": _assignment_id(group_id, member["id"]),
            "groupId": group_id,
            "userId": member["id"],
            "userType": "CUSTOMER",
        }
        for member in company.members(actor)
        if group_id in member["groups"]
    ]
    db.session.rollback()
    return _json(items)


@bp.post("/iam/<tenant>/groups/<group_id>/users")
def add_group_user(tenant: str, group_id: str):
    """company.add_to_group: same company only, never beyond the caller's own scopes."""
    _check_tenant(tenant)
    group_id = _path_id(group_id, "group")
    actor = customer_actor()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise EmporixError(400, "The request body must be a JSON object.")
    user_id, user_type = body.get("userId"), body.get("userType", "CUSTOMER")
    if not isinstance(user_id, str) or user_id == "":
        raise EmporixError(400, "'userId' is required and must be a string.")
    if user_type != "CUSTOMER":
        raise EmporixError(400, "Only userType CUSTOMER is supported.")
    company.add_to_group(actor, group_id, _path_id(user_id, "user"))
    db.session.commit()
    return _json({"id": _assignment_id(group_id, user_id)}, 201)


@bp.delete("/iam/<tenant>/groups/<group_id>/users/<customer_id>")
def remove_group_user(tenant: str, group_id: str, customer_id: str):
    """company.remove_from_group: same company only, never the last ADMIN (409). Emporix
    answers this operation with 204, 401 or 403 only: a group, user or membership that is not
    in the token's company is a 403 here, whichever it is (nothing about a neighbour leaks)."""
    _check_tenant(tenant)
    actor = customer_actor()
    try:
        group_id = _path_id(group_id, "group")
        company.remove_from_group(actor, group_id, _path_id(customer_id, "user"))
    except (DirectoryError, EmporixError) as error:
        if error.status != 404:
            raise
        raise EmporixError(
            403, "No such member of that group in the token's legal entity."
        ) from None
    db.session.commit()
    return "", 204, NO_STORE
