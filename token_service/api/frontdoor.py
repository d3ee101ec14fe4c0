"""The front door: the authorization endpoint (RFC 6749 §4.1) with its hosted pages (sign-in,
company picker, consent), UserInfo and RP-initiated logout (OpenID Connect).

Pages are rendered on the server and work without JavaScript. Every form carries a CSRF token
(double submit: a random cookie, the same value in the form). Every page is unframeable, sends
no referrer and is never cached. Nothing but an exact registered URI is redirected to.
"""

from __future__ import annotations

import json
from hmac import compare_digest
from urllib.parse import urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import InvalidGrantError, OAuth2Error
from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .. import entitlements
from ..extensions import db
from ..models import Client, Customer, Scope, Session, utcnow
from ..oauth2 import authorize, browser, login
from ..oauth2.authorize import (
    AccessDenied,
    AuthorizationPageError,
    AuthorizationRequest,
    ConsentRequired,
    LoginRequired,
)
from ..oauth2.grants import choose_entity
from ..oauth2.oidc import profile_claims
from ..oauth2.sessions import NewCode
from ..scopes import join_scopes, split_scopes
from ..security import new_token
from ..throttle import TooManyAttempts
from .errors import oauth_error_parts

bp = Blueprint("frontdoor", __name__, url_prefix="/oauth")

SERVICE_NAME = "Commerce sign-in"
PAGE_HEADERS = {
    # Never framed (clickjacking), never a referrer (the query carries state and codes).
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}
#: Plain words for the scopes the consent page lists (else the catalogue's description).
SCOPE_WORDS = {
    "openid": "Know who you are (your account's identifier)",
    "email": "See your email address",
    "profile": "See your name",
}
MAX_EMAIL, MAX_PASSWORD = 320, 1024


# -- cookies ---------------------------------------------------------------------------------


def _secure() -> bool:
    """Secure cookies unless the issuer is plain http on a loopback host (development)."""
    issuer = urlsplit(current_app.config["SETTINGS"].issuer)
    return not (issuer.scheme == "http" and issuer.hostname in ("localhost", "127.0.0.1"))


def _cookie(name: str) -> str:
    # The __Host- prefix: the browser keeps the cookie to this host, path / and https.
    return f"__Host-{name}" if _secure() else name


def _set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        _cookie(name),
        value,
        max_age=max_age,
        path="/",
        secure=_secure(),
        httponly=True,
        samesite="Lax",
    )


def _csrf_token() -> str:
    token = request.cookies.get(_cookie("csrf"))
    if not token or len(token) > 64:
        token = g.get("new_csrf") or new_token()
        g.new_csrf = token
    return token


def _check_csrf() -> None:
    cookie = request.cookies.get(_cookie("csrf"), "")
    sent = request.form.get("csrf_token", "")
    if not cookie or not compare_digest(cookie.encode(), sent.encode()):
        raise AuthorizationPageError(
            "This form has expired or was not sent from this site. Go back and try again."
        )


@bp.after_request
def _page_headers(response: Response) -> Response:
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    if g.get("new_csrf"):
        _set_cookie(response, "csrf", g.new_csrf, None)
    return response


@bp.errorhandler(AuthorizationPageError)
def _page_error(error: AuthorizationPageError):
    db.session.rollback()
    return _message("Something went wrong", error.message, 400, error=True)


def _message(title: str, message: str, status: int = 200, *, error: bool = False):
    return _render("message.html", status, title=title, message=message, error=error)


def _render(template: str, status: int = 200, **context):
    return render_template(template, service_name=SERVICE_NAME, **context), status


# -- the authorization endpoint --------------------------------------------------------------


def _settings():
    return current_app.config["SETTINGS"]


def _sessions():
    return current_app.extensions["sessions"]


def _parse(pairs) -> AuthorizationRequest | Response:
    """A valid request, or the redirect that carries its error to the client."""
    parsed, error = authorize.parse(list(pairs), _sessions().load_client)
    if error is not None:
        return redirect(parsed.error_redirect(_settings().issuer, error), 303)
    return parsed


def _carried() -> AuthorizationRequest | Response:
    """The authorization request a page's form carried, validated again."""
    _check_csrf()
    return _parse(authorize.decode(request.form.get("authorization_request", "")))


def _browser_session():
    return browser.find_browser_session(request.cookies.get(_cookie("session")), utcnow())


@bp.route("/authorize", methods=["GET", "POST"])
def authorize_endpoint():
    """RFC 6749 §4.1.1; OpenID Connect Core §3.1.2.1 (GET and POST)."""
    pairs = (
        request.args.items(multi=True)
        if request.method == "GET"
        else request.form.items(multi=True)
    )
    parsed = _parse(pairs)
    if isinstance(parsed, Response):
        return parsed
    return _continue(parsed, _browser_session())


def _continue(req: AuthorizationRequest, session, *, consent: bool | None = None):
    """The next step for a valid request: sign-in, picker, consent, or the code."""
    issuer = _settings().issuer
    now = utcnow()
    too_old = req.max_age is not None and (
        session is None or (now - session.auth_time).total_seconds() > req.max_age
    )
    customer = db.session.get(Customer, session.customer_id) if session is not None else None
    if customer is None or customer.status != "active" or "login" in req.prompt or too_old:
        if "none" in req.prompt:
            # OpenID Connect Core §3.1.2.6: no page may be shown.
            return redirect(req.error_redirect(issuer, LoginRequired("Sign-in is required.")))
        return _login_page(req)

    entities, _ = entitlements.of(customer.id)
    assigned = {e["id"] for e in entities}
    entity = req.legal_entity_id if req.legal_entity_id in assigned else None
    if "select_account" in req.prompt and len(entities) > 1:
        return _picker_page(req, customer, entities, entity)
    if entity is None and entities:
        if len(entities) == 1 or "none" in req.prompt:
            entity = choose_entity(None, customer.default_legal_entity_id, entities)
        else:
            return _picker_page(req, customer, entities)
    if entity is not None:
        req = req.with_entity(entity)

    scope = join_scopes(req.scope)
    if consent is False:
        return redirect(req.error_redirect(issuer, AccessDenied("The customer denied access.")))
    needs_consent = consent is None and not req.client.first_party
    if needs_consent and (
        "consent" in req.prompt or not browser.has_consent(customer.id, req.client.client_id, scope)
    ):
        if "none" in req.prompt:
            return redirect(req.error_redirect(issuer, ConsentRequired("Consent needed.")))
        return _consent_page(req, customer)
    if consent:
        browser.record_consent(customer.id, req.client.client_id, scope)
    code = _sessions().store_code(
        NewCode(
            client_id=req.client.client_id,
            redirect_uri=req.redirect_uri,
            code_challenge=req.code_challenge,
            customer_id=customer.id,
            browser_session_id=session.id,
            scope=scope,
            legal_entity_id=entity,
            nonce=req.nonce,
            auth_time=session.auth_time,
        )
    )
    return redirect(req.redirect(issuer, code=code), 303)


def _client_name(req: AuthorizationRequest) -> str:
    row = db.session.get(Client, req.client.client_id)
    return row.name if row is not None else req.client.client_id


def _login_page(req: AuthorizationRequest, error: str | None = None, status: int = 200):
    email = request.form.get("email") or req.login_hint
    return _render(
        "login.html",
        status,
        client_name=_client_name(req),
        csrf_token=_csrf_token(),
        authorization_request=req.encoded(),
        email=(email or "")[:MAX_EMAIL],
        error=error,
    )


def _picker_page(
    req: AuthorizationRequest,
    customer: Customer,
    entities: list[dict],
    selected: str | None = None,
):
    return _render(
        "picker.html",
        client_name=_client_name(req),
        csrf_token=_csrf_token(),
        authorization_request=req.encoded(),
        email=customer.email,
        entities=entities,
        selected=selected or customer.default_legal_entity_id,
    )


def _consent_page(req: AuthorizationRequest, customer: Customer):
    rows = db.session.execute(
        db.select(Scope.name, Scope.description).where(Scope.name.in_(req.scope))
    )
    descriptions = {name: description for name, description in rows}
    lines = [SCOPE_WORDS.get(s) or descriptions.get(s) or s for s in sorted(req.scope)]
    return _render(
        "consent.html",
        client_name=_client_name(req),
        csrf_token=_csrf_token(),
        authorization_request=req.encoded(),
        email=customer.email,
        scopes=lines,
    )


@bp.post("/authorize/login")
def login_form():
    """The sign-in page's form: the password grant's own check (oauth2/login.py)."""
    req = _carried()
    if isinstance(req, Response):
        return req
    email = request.form.get("email", "")[:MAX_EMAIL]
    password = request.form.get("password", "")[:MAX_PASSWORD]
    if not email or not password:
        return _login_page(req, "Enter your email and password.", 400)
    try:
        customer, _ = login.check_credentials(
            _sessions(),
            current_app.extensions["login_throttle"],
            email,
            password,
            request.remote_addr,
            req.client.client_id,
        )
    except TooManyAttempts as exc:
        page, status = _login_page(
            req, f"Too many failed sign-ins. Try again in {exc.retry_after} seconds.", 429
        )
        return Response(page, status, {"Retry-After": str(exc.retry_after)})
    except InvalidGrantError:
        return _login_page(req, "Invalid email or password.", 401)
    session, cookie = browser.start_browser_session(customer.id, req.client.client_id)
    db.session.commit()
    response = current_app.make_response(_continue(req.after_login(), session))
    _set_cookie(response, "session", cookie, browser.BROWSER_SESSION_SECONDS)
    return response


@bp.post("/authorize/select")
def select():
    """The picker's choice: it stands for the `legal_entity_id` the request could have sent."""
    req = _carried()
    if isinstance(req, Response):
        return req
    session = _browser_session()
    if session is None:
        return _continue(req, None)
    chosen = request.form.get("legal_entity_id", "")
    entities, _ = entitlements.of(session.customer_id)
    if chosen not in {e["id"] for e in entities}:
        customer = db.session.get(Customer, session.customer_id)
        return _picker_page(req, customer, entities)
    return _continue(req.without_prompt("select_account").with_entity(chosen), session)


@bp.post("/authorize/consent")
def consent():
    req = _carried()
    if isinstance(req, Response):
        return req
    decision = request.form.get("decision")
    if decision not in ("allow", "deny"):
        raise AuthorizationPageError("Choose Allow or Deny.")
    return _continue(req, _browser_session(), consent=decision == "allow")


# -- UserInfo (OpenID Connect Core §5.3) -----------------------------------------------------


def _bearer_error(status: int, error: str | None, description: str = ""):
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    if description:
        challenge += f', error_description="{description}"'
    body = {"error": error or "invalid_request", "error_description": description}
    return jsonify(body), status, {"WWW-Authenticate": challenge}


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo():
    """The customer's claims, for an access token of an OpenID Connect session."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _bearer_error(401, None)
    try:
        claims = current_app.extensions["introspection"].live_access_token(token.strip())
    except OAuth2Error as error:  # the deny-list is unreachable: fail closed, as introspection
        status, body, headers = oauth_error_parts(error)
        return jsonify(body), status, headers
    if claims is None or not claims.get("sid"):
        return _bearer_error(401, "invalid_token", "The access token is not active.")
    session = db.session.get(Session, claims["sid"])
    ceiling = split_scopes(session.scope if session is not None else "")
    if "openid" not in ceiling:
        return _bearer_error(403, "insufficient_scope", "The session has no openid scope.")
    body = {"sub": claims["sub"], "legal_entity_id": claims.get("legal_entity_id")}
    customer = db.session.get(Customer, claims["sub"])
    if customer is not None:
        body |= profile_claims(customer.id, customer.email, ceiling)
    return jsonify(body)


# -- RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) ----------------------------

LOGOUT_PARAMS = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id")


def _verify_id_token_hint(hint: str) -> dict | None:
    """The claims of an ID token we issued (an expired one is fine: §2 allows it)."""
    keyring = current_app.extensions["keyring"]
    try:
        keys = KeySet.import_key_set(json.loads(keyring.jwks_json()))
        token = jwt.decode(hint, keys, algorithms=[keyring.current.alg])
    except (JoseError, ValueError, TypeError):
        return None
    if token.header.get("typ") != "JWT" or token.claims.get("iss") != _settings().issuer:
        return None
    return token.claims


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """End the browser session and revoke the refresh-token families born from it."""
    if request.method == "POST":
        _check_csrf()
    values = request.args if request.method == "GET" else request.form
    params = {name: values.get(name) for name in LOGOUT_PARAMS if values.get(name)}
    claims = None
    if "id_token_hint" in params:
        claims = _verify_id_token_hint(params["id_token_hint"])
        if claims is None:
            raise AuthorizationPageError("The sign-out link is not valid (id_token_hint).")
    client_id = params.get("client_id") or (claims or {}).get("aud")
    if claims is not None and client_id != claims.get("aud"):
        raise AuthorizationPageError("The sign-out link is not valid (client_id).")
    target = params.get("post_logout_redirect_uri")
    if target is not None:
        client = _sessions().load_client(client_id) if isinstance(client_id, str) else None
        if client is None or target not in client.post_logout_redirect_uris:
            raise AuthorizationPageError("This sign-out redirect URI is not registered.")
    if request.method == "GET" and claims is None:
        # No proof that the client asked: the customer confirms (a form, so CSRF-checked).
        carried = sorted(params.items())
        return _render("logout.html", csrf_token=_csrf_token(), carried=carried)

    ended = []
    current = _browser_session()
    if current is not None:
        ended.append(current)
    if claims is not None and claims.get("sid"):
        hinted = browser.browser_session_of(str(claims["sid"]))
        if hinted is not None and hinted not in ended:
            ended.append(hinted)
    for session in ended:
        browser.end_browser_session(session, "logout")
    db.session.commit()
    if target is not None:
        pairs = [("state", params["state"])] if "state" in params else []
        response = redirect(add_params_to_uri(target, pairs), 303)
    else:
        response = current_app.make_response(
            _message("Signed out", "You are signed out. You can close this window.")
        )
    response.delete_cookie(_cookie("session"), path="/", secure=_secure(), samesite="Lax")
    return response
