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

import inspect
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from http import HTTPStatus

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from werkzeug.exceptions import BadRequest, HTTPException

from .. import entitlements
from ..clients import load_client
from ..extensions import db
from ..inputs import InvalidJson, parse_json, text_problem
from ..keys import NoSigningKey
from ..kv import StoreUnavailable
from ..models import Customer, Session, new_id
from ..oauth2.introspect import TemporarilyUnavailable
from ..oauth2.oidc import profile_claims
from ..oauth2.request import TokenRequest
from ..revocation import revoke_session
from ..scopes import COMPANIES_SCOPE, split_scopes
from ..security import hash_token, new_token
from ..services import company
from ..services.base import ServiceError
from ..throttle import TooManyAttempts
from . import emporix_models as schema
from .admin.errors import ApiError
from .admin.query import Param
from .emporix_models import MAX_ID_LENGTH, TENANT_SCHEMA, dump
from .errors import error_parts, render_http_errors_under
from .front import run_once_more_on_lost_connection
from .schemas import Endpoint, Reply, params_of
from .self_service import customer_actor

bp = Blueprint("emporix", __name__)
log = logging.getLogger(__name__)

ANONYMOUS_TYP = "anon+jwt"
ANONYMOUS_REFRESH_TTL = 86400
ANONYMOUS_CUSTOMER = "00000000"  # Emporix's customer number for a visitor
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
    fault = {}
    if status == 401:
        # Emporix's gateway answers a 401 with this object.
        detail = schema.EmporixFaultDetail(errorcode=f"emporix.{kind}")
        fault["fault"] = schema.EmporixFault(faultstring=message, detail=detail)
    if iam:
        phrase = HTTPStatus(status).phrase
        return dump(
            schema.EmporixIamError(
                code=status, status=phrase, message=message, details=[message], **fault
            )
        )
    return dump(schema.EmporixError(status=status, type=kind, message=message, **fault))


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


@bp.errorhandler(ServiceError)
def directory_error(error: ServiceError):
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


@bp.errorhandler(DataError)
def refused_value(error: DataError):
    """A value the database refused: the app's 400 (api/errors.py), in this layer's shape."""
    status, body, _ = error_parts(error, oauth=False)
    return _error_response(EmporixError(status, body["message"]))


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


def _http_error(error: HTTPException):
    """An unknown path or method under this layer's prefixes, in this layer's shape."""
    return _error_response(
        EmporixError(
            error.code or 400,
            error.description or error.name,
            headers=dict((k, v) for k, v in error.get_headers() if k.lower() == "allow"),
        )
    )


@bp.record_once
def _own_http_errors(state) -> None:
    render_http_errors_under(state.app, ("/customer/", "/customerlogin/", "/iam/"), _http_error)


def _json(body: BaseModel | list[BaseModel], status: int = 200):
    """An answer built through its model (and a list of them, as a list)."""
    response = jsonify([dump(item) for item in body] if isinstance(body, list) else dump(body))
    response.status_code = status
    response.headers.update(NO_STORE)
    return response


# -- how a route is declared ------------------------------------------------------------------

#: Every route of the layer, as /openapi.json describes it (api/openapi.py renders them).
ENDPOINTS: list[Endpoint] = []
TAG = "Emporix-compatible"
BEARER = ({"bearerToken": []},)
ANONYMOUS = ({"emporixAnonymousToken": []},)
ERRORS = {
    400: "A parameter or the body is missing or malformed.",
    401: "No token, or an invalid, expired or revoked one; for a login, wrong credentials.",
    403: "The token may not do this (scope, another company, escalation).",
    404: "Another tenant, or no such resource in the token's legal entity.",
    409: "The last admin of the legal entity stays.",
    429: "Too many failed logins, or anonymous tokens from one address: wait `Retry-After` "
    "seconds.",
    503: "The database or the store is unavailable: retry.",
}
_PATH_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}


def route(
    method: str,
    rule: str,
    *,
    summary: str,
    ok: dict[int, Reply],
    errors: tuple[int, ...],
    security: tuple[dict, ...] = BEARER,
    query: type[schema.Request] | None = None,
    body: type[schema.Request] | None = None,
):
    """Register a view and its description: the query and body models it reads, its answers
    (`ok`), and its refusals in the error shape of its path (404 and 503 always)."""
    iam = rule.startswith("/iam/")

    def decorator(view):
        names = re.findall(r"<(\w+)>", rule)
        replies = dict(ok)
        for status in {*errors, 404, 503}:
            headers = {"Retry-After": "Seconds."} if status in (429, 503) else {}
            model = schema.EmporixIamError if iam else schema.EmporixError
            replies[status] = Reply(ERRORS[status], model, headers=headers)
        ENDPOINTS.append(
            Endpoint(
                method,
                re.sub(r"<(\w+)>", r"{\1}", rule),
                f"emporix_{'iam_' if iam else ''}{view.__name__}",
                TAG,
                summary,
                replies,
                inspect.getdoc(view) or "",
                security,
                tuple(Param(n, TENANT_SCHEMA if n == "tenant" else _PATH_ID) for n in names),
                params_of(query) if query is not None else (),
                body=body,
            )
        )
        return bp.route(rule, methods=[method])(view)

    return decorator


def _ok(model, status: int = 200) -> dict[int, Reply]:
    return {status: Reply("Success.", model)}


NO_CONTENT = {204: Reply("Done.")}

# -- what every request carries ---------------------------------------------------------------


def _check_tenant(tenant: str | None) -> None:
    if tenant != _settings().tenant:
        raise EmporixError(404, "The tenant does not exist.", kind="resource_not_found")


_QUERY_MESSAGES = {
    "missing": "Missing '{}' parameter.",
    "string_too_long": "'{}' is too long.",
    "nul": "'{}' contains a control character.",
}
_BODY_MESSAGES = {
    "string_too_long": "'{}' is too long.",
    "nul": "'{}' contains a control character.",
    "literal_error": "Only {} CUSTOMER is supported.",
}


def _invalid(exc: ValidationError, messages: dict[str, str], default: str) -> EmporixError:
    """The first problem of `exc`, in the words the layer has always used."""
    error = exc.errors(include_url=False)[0]
    if not error["loc"]:
        return EmporixError(400, "The request body must be a JSON object.")
    name = str(error["loc"][0])
    return EmporixError(400, messages.get(error["type"], default).format(name))


def _query(model: type[schema.Request]) -> schema.Request:
    """The query parameters `model` declares, bounded as the token endpoint bounds its own;
    a parameter twice is refused, a blank one is omitted."""
    values = {}
    for name in model.model_fields:
        given = request.args.getlist(name)
        if len(given) > 1:
            raise EmporixError(400, f"'{name}' is repeated.")
        if given and given[0] != "":
            values[name] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _invalid(exc, _QUERY_MESSAGES, "'{}' is invalid.") from None


def _body(model: type[schema.Request]) -> schema.Request:
    """The JSON body (inputs.parse_json), validated with `model`."""
    try:
        body = parse_json(request.get_data(cache=False)) if request.is_json else None
    except InvalidJson as exc:
        raise EmporixError(400, str(exc)) from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc, _BODY_MESSAGES, "'{}' is required and must be a string.") from None


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


# -- what a customer access token is served: the layer's one rule of consent -----------------

#: Emporix's scope for reading the customer's profile (`me`), and for reading the customer's
#: own legal entities (`me`'s `b2b.legalEntities`): what another client's token must hold.
PROFILE_SCOPE = "customer.customerprofile_view"


def _is_storefront(claims: dict) -> bool:
    """A token issued to the storefront client (`TOKEN_SERVICE_EMPORIX_CLIENT_ID`)."""
    return claims.get("client_id") == _settings().emporix_client_id


@dataclass(frozen=True)
class CustomerToken:
    """A live customer access token and what this layer releases to it (DESIGN §4,
    "Emporix-compatible layer"): decided here, for every `/customer/{tenant}/...` path.

    The storefront client's tokens are served fully: it is the layer's own first-party client,
    whose logins and refreshes these paths are. Any other client's token gets only what the
    customer consented to that client: the profile (`me`) with `customer.customerprofile_view`
    in the token, the email when the session's ceiling releases it (as UserInfo and the ID
    token decide: `oidc.profile_claims`), the legal entities with
    `customermanagement.legalentity_read_own` in the token; it ends only its own client's
    sessions, and never authorizes a refresh of the storefront's. (The `/iam` paths are
    self-service's, which asks every client's token for the path's scope.)"""

    claims: dict
    storefront: bool
    ceiling: frozenset[str]  # the session's scope ceiling: what the customer consented to

    def holds(self, scope: str) -> bool:
        return self.storefront or scope in split_scopes(self.claims.get("scope"))

    def email(self, customer: Customer) -> str | None:
        if self.storefront:
            return customer.email
        return profile_claims(customer.id, customer.email, self.ceiling).get("email")

    def may_end(self, claims: dict) -> bool:
        """Whether this token may log out the session of `claims` (the same customer's)."""
        return self.storefront or claims.get("client_id") == self.claims.get("client_id")


def _live_customer(token: str) -> CustomerToken:
    """The live check (`_live_customer_claims`) and what the token is served."""
    claims = _live_customer_claims(token)
    if _is_storefront(claims):
        return CustomerToken(claims, storefront=True, ceiling=frozenset())
    session = db.session.get(Session, claims["sid"])
    if session is None or session.customer_id != claims.get("sub"):
        raise _unauthorized("The access token is invalid, expired or revoked.")
    return CustomerToken(claims, storefront=False, ceiling=split_scopes(session.scope))


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


def _customer_token(answer: dict, model=schema.EmporixRefreshCustomerToken, **extra):
    """A token-endpoint answer in Emporix's shape (RefreshCustomerToken, or `model`)."""
    claims = current_app.extensions["keyring"].decode(answer["access_token"]) or {}
    return model(
        access_token=answer["access_token"],
        expires_in=answer["expires_in"],
        refresh_token=answer["refresh_token"],
        refresh_token_expires_in=answer["refresh_token_expires_in"],
        token_type=answer["token_type"],
        session_id=claims.get("sid"),
        **extra,
    )


def _with_tenant(scope: str) -> str:
    """Emporix's scope strings name the tenant as one more entry: on this layer only."""
    return " ".join(filter(None, [scope, f"tenant={_settings().tenant}"]))


# -- anonymous tokens -------------------------------------------------------------------------


def _anonymous_key(refresh_token: str) -> str:
    return f"emporix:anonymous:{hash_token(refresh_token)}"


def _anonymous_answer(
    session_id: str, refresh_token: str, refresh_expires_in: int
) -> schema.EmporixAnonymousToken:
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
    return schema.EmporixAnonymousToken(
        token_type="Bearer",
        access_token=token,
        expires_in=settings.anonymous_token_ttl,
        refresh_token=refresh_token,
        refresh_token_expires_in=refresh_expires_in,
        sessionId=session_id,
        scope=claims["scope"],
    )


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


def _storefront_client(client_id: str) -> None:
    if client_id != _settings().emporix_client_id or load_client(client_id) is None:
        raise _unauthorized("Unknown client_id.")


def _store_call(work, *args):
    try:
        return work(*args)
    except StoreUnavailable:
        raise EmporixError(
            503, "The session store is unavailable. Retry shortly.", headers={"Retry-After": "1"}
        ) from None


ANONYMOUS_RATE_WINDOW = 60  # seconds: TOKEN_SERVICE_EMPORIX_ANONYMOUS_RATE_LIMIT is a minute's


def _client_address() -> str:
    """The address anonymous tokens are counted by: the client's, as the login throttle takes
    it (`request.remote_addr`: X-Forwarded-For only behind TOKEN_SERVICE_TRUSTED_PROXIES); an
    IPv6 address by its /64, which one host usually holds whole."""
    raw = request.remote_addr or ""
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _count_anonymous() -> None:
    """At most `anonymous_rate_limit` anonymous tokens (logins and refreshes together) per
    client address and minute, counted before anything is signed or stored: beyond, a 429 with
    Retry-After that costs one counter. A store that cannot count lets the call through (fail
    open, as the login throttle: DESIGN §6)."""
    limit = _settings().anonymous_rate_limit
    if not limit:
        return
    counter = current_app.extensions["rate_counter"]
    try:
        retry_after = counter.over(
            f"emporix:anonymous-rate:{_client_address()}", limit, ANONYMOUS_RATE_WINDOW
        )
    except StoreUnavailable:
        log.error("store unavailable: anonymous tokens are not rate-limited")
        return
    if not retry_after:
        return
    raise EmporixError(
        429,
        "Too many anonymous token requests from this address. Retry later.",
        headers={"Retry-After": str(retry_after)},
    )


@route(
    "GET",
    "/customerlogin/auth/anonymous/login",
    summary="Emporix: an anonymous token",
    ok=_ok(schema.EmporixAnonymousToken),
    errors=(400, 401, 429),
    security=(),
    query=schema.AnonymousLoginQuery,
)
def anonymous_login():
    """A new anonymous session for the storefront client: a short-lived anonymous access
    token and its refresh token. Limited per client address
    (`TOKEN_SERVICE_EMPORIX_ANONYMOUS_RATE_LIMIT` a minute, refreshes included)."""
    query = _query(schema.AnonymousLoginQuery)
    _check_tenant(query.tenant)
    _storefront_client(query.client_id)
    _count_anonymous()
    session_id, refresh_token = new_id("anon"), new_token()
    store = current_app.extensions["token_store"]
    _store_call(
        store.set, _anonymous_key(refresh_token), session_id.encode(), ANONYMOUS_REFRESH_TTL
    )
    return _json(_anonymous_answer(session_id, refresh_token, ANONYMOUS_REFRESH_TTL))


@route(
    "GET",
    "/customerlogin/auth/anonymous/refresh",
    summary="Emporix: refresh an anonymous token",
    ok=_ok(schema.EmporixAnonymousToken),
    errors=(400, 401, 429),
    security=(),
    query=schema.AnonymousRefreshQuery,
)
def anonymous_refresh():
    """A new anonymous access token for the same session; the refresh token stays. Counted
    with the anonymous logins of the client address."""
    query = _query(schema.AnonymousRefreshQuery)
    _check_tenant(query.tenant)
    _storefront_client(query.client_id)
    _count_anonymous()
    refresh_token = query.refresh_token
    store = current_app.extensions["token_store"]
    key = _anonymous_key(refresh_token)
    session_id = _store_call(store.get, key)
    if session_id is None:
        raise _unauthorized("The refresh token is invalid or expired.")
    remaining = max(1, _store_call(store.ttl, key))
    return _json(_anonymous_answer(session_id.decode(), refresh_token, remaining))


# -- customer login, refresh, logout, validation ----------------------------------------------


@route(
    "POST",
    "/customer/<tenant>/login",
    summary="Emporix: log a customer in",
    ok=_ok(schema.EmporixCustomerToken),
    errors=(400, 401, 429),
    security=ANONYMOUS,
    body=schema.EmporixPasswordAuthentication,
)
def login(tenant: str):
    """The password grant of `/oauth/token` for the storefront client
    (`TOKEN_SERVICE_EMPORIX_CLIENT_ID`): the same throttling and the same answer for every
    failure. Authorized with an anonymous token."""
    _check_tenant(tenant)
    _require_anonymous()
    credentials = _body(schema.EmporixPasswordAuthentication)
    answer = _grant(
        {"grant_type": "password", "username": credentials.email, "password": credentials.password}
    )
    # No separate SaaS token here: the access token carries the customer (`sub`).
    # initialPassword: Emporix's schema types it as a string (its example shows a boolean): the
    # schema is the contract. Passwords are the customer's own here (set at activation).
    return _json(
        _customer_token(
            answer,
            schema.EmporixCustomerToken,
            saas_token=answer["access_token"],
            initialPassword="false",
        )
    )


def _refresh_authorized() -> None:
    """Emporix asks for the anonymous token here; a storefront may send the customer's
    (possibly expired) access token instead, which is ours if its signature is and it was
    issued to the storefront client (another client's token authorizes nothing here)."""
    token = _bearer()
    if anonymous_claims(token) is not None:
        return
    claims = current_app.extensions["keyring"].decode(token)
    if claims is None or not _is_storefront(claims):
        raise _unauthorized("An anonymous or storefront customer access token is required.")


@route(
    "GET",
    "/customer/<tenant>/refreshauthtoken",
    summary="Emporix: refresh a customer token, optionally switching company",
    ok=_ok(schema.EmporixRefreshCustomerToken),
    errors=(400, 401),
    security=(*ANONYMOUS, *BEARER),
    query=schema.RefreshAuthTokenQuery,
)
def refresh_auth_token(tenant: str):
    """The refresh grant of `/oauth/token` with `legal_entity_id`: rotation, grace replay,
    reuse detection, recomputed scopes; a refused switch leaves the presented refresh token
    valid. Authorized with an anonymous token or one of the customer's access tokens (expired
    ones too)."""
    _check_tenant(tenant)
    _refresh_authorized()
    query = _query(schema.RefreshAuthTokenQuery)
    answer = _grant(
        {
            "grant_type": "refresh_token",
            "refresh_token": query.refreshToken,
            "legal_entity_id": query.legalEntityId,
        }
    )
    return _json(_customer_token(answer))


@route(
    "GET",
    "/customer/<tenant>/logout",
    summary="Emporix: log a customer out",
    ok=NO_CONTENT,
    errors=(400, 401, 403),
    query=schema.LogoutQuery,
)
def logout(tenant: str):
    """Revokes the session of `accessToken`; its access tokens are deny-listed at once.
    Authorized with an access token of the same customer: the storefront client's, or the
    same client's as `accessToken` (another client ends only its own sessions)."""
    _check_tenant(tenant)
    caller = _live_customer(_bearer())
    claims = _live_customer_claims(_query(schema.LogoutQuery).accessToken)
    if claims["sub"] != caller.claims["sub"]:
        raise EmporixError(403, "The access token belongs to another customer.")
    if not caller.may_end(claims):
        raise EmporixError(403, "The access token may end only its own client's sessions.")
    session = db.session.get(Session, claims["sid"])
    revoke_session(session, "logout", actor_type="customer", actor_id=claims["sub"])
    db.session.commit()
    return "", 204, NO_STORE


@route(
    "GET",
    "/customer/<tenant>/validateauthtoken",
    summary="Emporix: validate a customer access token",
    ok=_ok(schema.EmporixValidateTokenResponse),
    errors=(401,),
)
def validate_auth_token(tenant: str):
    """Introspection's live check of the bearer token (deny-list included). `email` is null
    for another client's token unless its customer consented to `email`."""
    _check_tenant(tenant)
    caller = _live_customer(_bearer())
    claims = caller.claims
    customer = db.session.get(Customer, claims["sub"])
    email = caller.email(customer) if customer is not None else None
    db.session.rollback()
    entity = {"legalEntityId": claims["legal_entity_id"]} if claims.get("legal_entity_id") else {}
    answer = schema.EmporixValidateTokenResponse(
        token_type="Bearer",
        expires_in=max(0, claims["exp"] - int(time.time())),
        scope=_with_tenant(claims["scope"]),
        sessionId=claims["sid"],
        email=email,
        **entity,
    )
    return _json(answer)


@route(
    "GET",
    "/customer/<tenant>/me",
    summary="Emporix: the customer's profile",
    ok=_ok(schema.EmporixCustomer),
    errors=(401, 403),
    security=(*BEARER, *ANONYMOUS),
)
def me(tenant: str):
    """Id, email and legal entities: the profile fields this service holds (a visitor's, with
    an anonymous token). Another client than the storefront needs
    `customer.customerprofile_view`, and gets the email only if its customer consented to
    `email`, the legal entities only with `customermanagement.legalentity_read_own`."""
    _check_tenant(tenant)
    token = _bearer()
    if anonymous_claims(token) is not None:
        return _json(
            schema.EmporixCustomer(
                id=ANONYMOUS_CUSTOMER,
                customerNumber=ANONYMOUS_CUSTOMER,
                firstName="Anonymous",
                lastName="Anonymous",
                accounts=[],
            )
        )
    caller = _live_customer(token)
    if not caller.holds(PROFILE_SCOPE):
        db.session.rollback()
        raise EmporixError(403, f"The access token does not grant {PROFILE_SCOPE}.")
    customer = db.session.get(Customer, caller.claims["sub"])
    if customer is None:
        db.session.rollback()
        raise _unauthorized("The access token is invalid, expired or revoked.")
    email = caller.email(customer)
    fields = {}
    if email is not None:
        fields["contactEmail"] = email
    if caller.holds(COMPANIES_SCOPE):
        entities, _ = entitlements.of(customer.id)
        legal_entities = [schema.EmporixLegalEntity(id=e["id"], name=e["name"]) for e in entities]
        fields["businessModel"] = "B2B" if entities else "B2C"
        fields["b2b"] = schema.EmporixB2b(legalEntities=legal_entities)
    db.session.rollback()
    return _json(
        schema.EmporixCustomer(
            id=customer.id,
            customerNumber=customer.id,
            accounts=[schema.EmporixAccount(id=email)] if email is not None else [],
            **fields,
        )
    )


# -- IAM: the company's groups and their members (company.py's rules) ------------------------


def _path_id(value: str, what: str) -> str:
    if len(value) > MAX_ID_LENGTH or text_problem(value):
        raise EmporixError(404, f"{what} not found")
    return value


def _group_document(group) -> schema.EmporixGroup:
    """Emporix's group document; `accessControls` are not modelled (scopes are ours)."""
    return schema.EmporixGroup(
        id=group.id,
        name={"en": group.name},
        code=group.code,
        userType="CUSTOMER",
        b2b=schema.EmporixGroupB2b(legalEntityId=group.legal_entity_id),
        metadata=schema.EmporixGroupMetadata(
            version=group.version,
            createdAt=group.created_at.isoformat().replace("+00:00", "Z"),
            modifiedAt=group.updated_at.isoformat().replace("+00:00", "Z"),
        ),
    )


def _assignment_id(group_id: str, customer_id: str) -> str:
    return f"{group_id}:{customer_id}"


@route(
    "GET",
    "/iam/<tenant>/groups",
    summary="Emporix IAM: the groups of the token's legal entity",
    ok=_ok(list[schema.EmporixGroup]),
    errors=(401, 403),
)
def list_groups(tenant: str):
    """company.groups: the entity's own groups (`customer.customer_read_own`)."""
    _check_tenant(tenant)
    items = [_group_document(group) for group, _ in company.groups(customer_actor())]
    db.session.rollback()
    return _json(items)


@route(
    "GET",
    "/iam/<tenant>/groups/<group_id>/users",
    summary="Emporix IAM: the members of a group",
    ok=_ok(list[schema.EmporixAssignment]),
    errors=(401, 403),
)
def list_group_users(tenant: str, group_id: str):
    """Members of one of the entity's groups (`customer.customer_read_own`)."""
    _check_tenant(tenant)
    group_id = _path_id(group_id, "group")
    actor = customer_actor()
    if group_id not in {group.id for group, _ in company.groups(actor)}:
        raise EmporixError(404, "group not found")
    items = [
        schema.EmporixAssignment(
            id=_assignment_id(group_id, member["id"]),
            groupId=group_id,
            userId=member["id"],
            userType="CUSTOMER",
        )
        for member in company.members(actor)
        if group_id in member["groups"]
    ]
    db.session.rollback()
    return _json(items)


@route(
    "POST",
    "/iam/<tenant>/groups/<group_id>/users",
    summary="Emporix IAM: add a member to a group",
    ok=_ok(schema.EmporixAssignmentId, 201),
    errors=(400, 401, 403, 409),
    body=schema.EmporixAssignmentCreate,
)
def add_group_user(tenant: str, group_id: str):
    """company.add_to_group (`iam.assignment_create_own`): a member of the entity, into a
    group whose scopes the caller holds all of. Adding again answers the same."""
    _check_tenant(tenant)
    group_id = _path_id(group_id, "group")
    actor = customer_actor()
    user_id = _body(schema.EmporixAssignmentCreate).userId
    company.add_to_group(actor, group_id, _path_id(user_id, "user"))
    db.session.commit()
    return _json(schema.EmporixAssignmentId(id=_assignment_id(group_id, user_id)), 201)


@route(
    "DELETE",
    "/iam/<tenant>/groups/<group_id>/users/<customer_id>",
    summary="Emporix IAM: remove a member from a group",
    ok=NO_CONTENT,
    errors=(401, 403, 409),
)
def remove_group_user(tenant: str, group_id: str, customer_id: str):
    """company.remove_from_group (`iam.assignment_delete_own`): the member's access tokens
    for the entity stop at once; the last ADMIN stays (409). A group, user or membership
    outside the token's legal entity is a 403, as Emporix documents only 204, 401 and 403 here
    (404: another tenant); nothing about a neighbour leaks."""
    _check_tenant(tenant)
    actor = customer_actor()
    try:
        group_id = _path_id(group_id, "group")
        company.remove_from_group(actor, group_id, _path_id(customer_id, "user"))
    except (ServiceError, EmporixError) as error:
        if error.status != 404:
            raise
        raise EmporixError(
            403, "No such member of that group in the token's legal entity."
        ) from None
    db.session.commit()
    return "", 204, NO_STORE
