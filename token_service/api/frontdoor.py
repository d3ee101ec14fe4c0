"""The front door: the authorization endpoint (RFC 6749 §4.1) with its hosted pages (sign-in,
company picker, consent), UserInfo and RP-initiated logout (OpenID Connect), and the page an
invitation's activation link opens (/activate).

Pages are rendered on the server and work without JavaScript. Every form carries a CSRF token
(double submit: a random cookie, the same value in the form). Every page is unframeable, sends
no referrer and is never cached. Nothing but an exact registered URI is redirected to.
"""

from __future__ import annotations

import json
import time
from hmac import compare_digest
from urllib.parse import urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import InvalidGrantError, OAuth2Error
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .. import entitlements, notifications
from ..extensions import db
from ..inputs import text_problem
from ..models import Client, Customer, LegalEntity, Scope, Session, utcnow
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
from ..services import company
from ..services.base import ServiceError
from ..services.catalogue import describe_scope
from ..throttle import TooManyAttempts
from .demo_page import DEMO_CLIENT_ID
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
MAX_EMAIL, MAX_PASSWORD = 320, 1024
PASSWORDS = frozenset({"password", "confirm_password"})


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


@bp.before_request
def _readable_input() -> None:
    """Every hosted page's query and form, checked once (inputs.text_problem): a control
    character is a 400 page before any view reads it, let alone queries with it. The
    authorization endpoint checks its parameters itself, with the same function, so that
    its errors can be redirected as RFC 6749 §4.1.2.1 says; UserInfo answers in JSON and reads
    only its Authorization header."""
    if request.endpoint in ("frontdoor.authorize_endpoint", "frontdoor.userinfo"):
        return
    pairs = [*request.args.items(multi=True)]
    if request.method == "POST":
        # Passwords are never stored or looked up as typed: the pages say what is wrong.
        pairs += [(k, v) for k, v in request.form.items(multi=True) if k not in PASSWORDS]
    if any(text_problem(name) or text_problem(value) for name, value in pairs):
        raise AuthorizationPageError("The request contains characters that are not allowed.")


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
    # The catalogue's words (every scope has some; a row from before they were required gets
    # the directory's), never a raw scope name.
    lines = [descriptions.get(s) or describe_scope(s) for s in sorted(req.scope)]
    # The client's RFC 7591 metadata: its name, logo, privacy policy and terms. The logo is
    # the one image of another origin the page may load (its exact URL in img-src).
    row = db.session.get(Client, req.client.client_id)
    logo = row.logo_uri if row is not None else None
    if logo is not None and any(c in logo for c in " ;,'\"\\"):
        logo = None
    body, status = _render(
        "consent.html",
        client_name=_client_name(req),
        csrf_token=_csrf_token(),
        authorization_request=req.encoded(),
        email=customer.email,
        scopes=lines,
        logo_uri=logo,
        client_uri=row.client_uri if row is not None else None,
        policy_uri=row.policy_uri if row is not None else None,
        tos_uri=row.tos_uri if row is not None else None,
    )
    response = make_response(body, status)
    if logo is not None:
        csp = PAGE_HEADERS["Content-Security-Policy"]
        response.headers["Content-Security-Policy"] = csp.replace(
            "img-src 'self'", f"img-src 'self' {logo}"
        )
    return response


def _sign_in(client_id: str, page):
    """Every sign-in form's one check: the password grant's (oauth2/login.py), then a new
    browser session, committed. Returns (session, cookie), or the form again as
    `page(error, status)` says it (429 with Retry-After)."""
    email = request.form.get("email", "")[:MAX_EMAIL]
    password = request.form.get("password", "")[:MAX_PASSWORD]
    if not email or not password:
        return current_app.make_response(page("Enter your email and password.", 400))
    try:
        customer, _ = login.check_credentials(
            _sessions(),
            current_app.extensions["login_throttle"],
            email,
            password,
            request.remote_addr,
            client_id,
        )
    except TooManyAttempts as exc:
        wait = f"Too many failed sign-ins. Try again in {exc.retry_after} seconds."
        response = current_app.make_response(page(wait, 429))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except InvalidGrantError:
        return current_app.make_response(page("Invalid email or password.", 401))
    session, cookie = browser.start_browser_session(customer.id, client_id)
    db.session.commit()
    return session, cookie


@bp.post("/authorize/login")
def login_form():
    """The sign-in page's form: the password grant's own check (oauth2/login.py)."""
    req = _carried()
    if isinstance(req, Response):
        return req
    signed_in = _sign_in(req.client.client_id, lambda *error: _login_page(req, *error))
    if isinstance(signed_in, Response):
        return signed_in
    session, cookie = signed_in
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
    """The claims of an ID token we issued, expired or not (§2: the OP may take an expired
    one as a hint of whom the RP means, never as more: see `_hint_names_this_browser`)."""
    keyring = current_app.extensions["keyring"]
    try:
        keys = KeySet.import_key_set(json.loads(keyring.jwks_json()))
        token = jwt.decode(hint, keys, algorithms=[keyring.current.alg])
    except (JoseError, ValueError, TypeError):
        return None
    if token.header.get("typ") != "JWT" or token.claims.get("iss") != _settings().issuer:
        return None
    return token.claims


def _hint_names_this_browser(claims: dict | None, current) -> bool:
    """True if an ID token hint proves that the RP asks to end this very browser session: it
    is unexpired, its `sub` is the signed-in customer and its `sid` names a session born from
    this browser session's codes. Only then is the End-User signed out without being asked.

    RP-Initiated Logout 1.0 §2: "the OP ... SHOULD ask the End-User whether to log out" when
    the hint does not identify the current session's End-User; §4: a logout request "could be
    from an RP that does not have a relationship with the OP ... or a CSRF attack". Anyone
    may hold an ID token: a foreign or stale one only ever gets the question.
    """
    if claims is None or current is None or claims.get("sub") != current.customer_id:
        return False
    exp = claims.get("exp")
    if type(exp) is not int or exp <= time.time():
        return False
    sid = claims.get("sid")
    if sid is None:
        return True
    born_from = browser.browser_session_of(str(sid)) if isinstance(sid, str) else None
    return born_from is not None and born_from.id == current.id


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """End this browser's session and revoke the refresh-token families born from it."""
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
    current = _browser_session()
    if request.method == "GET" and not _hint_names_this_browser(claims, current):
        # No proof that this browser's own client asked: the customer confirms (a form, so
        # CSRF-checked).
        carried = sorted(params.items())
        return _render("logout.html", csrf_token=_csrf_token(), carried=carried)

    # Only this browser's session ends: a hint naming another one ends nothing of it (whoever
    # holds an ID token must not sign its owner out elsewhere).
    if current is not None:
        browser.end_browser_session(current, "logout")
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


# -- account activation (the link of an invitation, company.invite) --------------------------

ACTIVATION_GONE = (
    "This activation link does not work any more: it was used already, it expired, or a newer "
    "invitation replaced it. Ask your company's administrator to invite you again."
)


def activate():
    """The activation link's page: the invited customer sets a password, through the same
    service function as POST /self-service/invitations/accept (company.accept_invitation)."""
    if request.method == "GET":
        return _activation_form(request.args.get("token", ""))
    _check_csrf()
    token = request.form.get("token", "")
    password = request.form.get("password", "")
    if password != request.form.get("confirm_password", ""):
        return _activation_form(token, "The two passwords are not the same.")
    if text_problem(password):
        return _activation_form(token, "The password must not contain control characters.")
    try:
        customer = company.accept_invitation(token, password)
    except ServiceError as error:
        db.session.rollback()
        if error.field == "password":
            return _activation_form(token, str(error).capitalize() + ".")
        return _activation_gone()
    db.session.commit()
    notifications.deliver_pending()  # the join links of the customer's other invitations
    return _render("activate.html", activated=True, email=customer.email, sign_in=_sign_in_url())


def _activation_form(token: str, error: str | None = None):
    """The form for a token whose invitation stands (400 with `error`), else the page that
    says the link is gone."""
    try:
        invitation, customer = company.standing_invitation(token)
    except ServiceError:
        return _activation_gone()
    page = _render(
        "activate.html",
        400 if error else 200,
        csrf_token=_csrf_token(),
        token=token,
        email=customer.email,
        company_name=db.session.get(LegalEntity, invitation.legal_entity_id).name,
        error=error,
        min_length=company.MIN_PASSWORD_LENGTH,
        max_length=company.MAX_PASSWORD_LENGTH,
    )
    db.session.rollback()  # nothing to keep: the page only read
    return page


def _activation_gone():
    db.session.rollback()
    return _message("This link does not work", ACTIVATION_GONE, 404, error=True)


def _sign_in_url() -> str | None:
    """Where the success page's "Sign in" goes: a fixed page of this service, never one the
    request names (no open redirect). The demo's, where its client is registered."""
    return url_for("demo_page.demo") if db.session.get(Client, DEMO_CLIENT_ID) else None


@bp.record_once
def _activation_route(state) -> None:
    # The link is $ISSUER/activate (config.activation_url), outside this blueprint's /oauth:
    # the rule is the app's and its endpoint this blueprint's, so that the pages' headers, CSRF
    # cookie and error page apply to it as to the other pages.
    state.app.add_url_rule("/activate", f"{bp.name}.activate", activate, methods=["GET", "POST"])


# -- joining a company (the link of an existing customer's invitation, company.invite) -------

#: Who asked for a sign-in on the join page, in its audit events: no client did.
JOIN_PAGE = "invitation-page"
INVITATION_GONE = (
    "This invitation does not work: it was used or declined already, it expired or was "
    "withdrawn, or it is meant for another account (sign out, then open the link again)."
)
MAX_LINK_TOKEN = 128


def join():
    """The page an existing customer's invitation links to. Signed in as the invitee, they
    join the company or decline (company.join_invitation, company.decline_invitation); not
    signed in, they sign in here first. Another account, and a link that no longer works, get
    one page that says only that (404): nothing of the invitation shows to anyone else."""
    if request.method == "POST":
        _check_csrf()
    values = request.args if request.method == "GET" else request.form
    token = _link_token(values)
    customer = _signed_in()
    if customer is None:
        return _join_sign_in_page(token)
    if request.method == "GET":
        return _join_form(token, customer)
    decision = request.form.get("decision")
    if decision not in ("join", "decline"):
        raise AuthorizationPageError("Choose Join or Decline.")
    decide = company.join_invitation if decision == "join" else company.decline_invitation
    try:
        invitation = decide(token, customer.id)
    except ServiceError:
        return _invitation_gone()
    name = db.session.get(LegalEntity, invitation.legal_entity_id).name
    db.session.commit()
    if decision == "decline":
        return _message("Invitation declined", f"You did not join {name}. Nothing changed.")
    return _message(
        f"You joined {name}",
        f"{name} is among your companies now: choose it in your shop to act for it.",
    )


def join_sign_in():
    """The join page's sign-in: the password grant's own check (oauth2/login.py), as on the
    authorization pages, then back to the page of the same link. The way back is this
    service's own page, never a target the request names (no open redirect)."""
    _check_csrf()
    token = _link_token(request.form)
    signed_in = _sign_in(JOIN_PAGE, lambda *error: _join_sign_in_page(token, *error))
    if isinstance(signed_in, Response):
        return signed_in
    _, cookie = signed_in
    response = redirect(url_for("frontdoor.join", token=token), 303)
    _set_cookie(response, "session", cookie, browser.BROWSER_SESSION_SECONDS)
    return response


def _link_token(values) -> str:
    """The link's token as sent; "" for one too long for any invitation to have."""
    token = values.get("token", "")
    return token if len(token) <= MAX_LINK_TOKEN else ""


def _signed_in() -> Customer | None:
    """The active customer this browser is signed in as, if any."""
    session = _browser_session()
    customer = db.session.get(Customer, session.customer_id) if session is not None else None
    return customer if customer is not None and customer.status == "active" else None


def _join_sign_in_page(token: str, error: str | None = None, status: int = 200):
    email = request.form.get("email", "")[:MAX_EMAIL] if error else ""
    return _render(
        "invitation.html",
        status,
        sign_in=True,
        csrf_token=_csrf_token(),
        token=token,
        email=email,
        error=error,
    )


def _join_form(token: str, customer: Customer):
    """Join / Decline for the invitee, else the page that says the link does not work."""
    try:
        invitation = company.invitation_for(token, customer.id)
    except ServiceError:
        return _invitation_gone()
    inviter = db.session.get(Customer, invitation.invited_by) if invitation.invited_by else None
    page = _render(
        "invitation.html",
        csrf_token=_csrf_token(),
        token=token,
        email=customer.email,
        company_name=db.session.get(LegalEntity, invitation.legal_entity_id).name,
        inviter=inviter.email if inviter is not None else None,
    )
    db.session.rollback()  # nothing to keep: the page only read
    return page


def _invitation_gone():
    db.session.rollback()
    return _message("This invitation does not work", INVITATION_GONE, 404, error=True)


@bp.record_once
def _join_routes(state) -> None:
    # The link is $ISSUER/invitations/join (company.JOIN_PATH), outside /oauth, registered as
    # /activate is: the app's rules, this blueprint's endpoints (headers, CSRF, error page).
    add = state.app.add_url_rule
    add(company.JOIN_PATH, f"{bp.name}.join", join, methods=["GET", "POST"])
    add(f"{company.JOIN_PATH}/sign-in", f"{bp.name}.join_sign_in", join_sign_in, methods=["POST"])
