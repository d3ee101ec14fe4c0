"""The Emporix-compatible customer API (api/emporix.py) on both backends.

Contract: every answer, errors included, is checked against the JSON Schemas we wrote from
Emporix's published OpenAPI (customer-management and IAM), as our /openapi.json carries them.
The seed story runs through the Emporix paths only; an equivalence test holds the layer to the
token endpoint's scopes. alice@acme.test is in ACME's ADMIN group and a CONTACT of Globex;
bob@acme.test is in ACME's BUYER group (demo data).
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import select

from token_service.config import ConfigError, Settings
from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.kv import StoreUnavailable
from token_service.models import CustomerGroup

TENANT = "demo"
ALICE, BOB = "cus_alice", "cus_bob"


@pytest.fixture
def schemas(client) -> dict:
    """Our contract schemas, with the document's components to resolve references."""
    return {"components": client.get("/openapi.json").json["components"]}


def check(schemas: dict, name: str, body) -> None:
    schema = {**schemas, "$ref": f"#/components/schemas/{name}"}
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, (name, body, [e.message for e in errors])


def check_list(schemas: dict, name: str, body) -> None:
    assert isinstance(body, list), body
    for item in body:
        check(schemas, name, item)


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def header_of(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


class Emporix:
    """A storefront written against Emporix, pointed at us."""

    def __init__(self, client) -> None:
        self.client = client
        self.anonymous: str | None = None

    def anonymous_login(self, tenant=TENANT, client_id="storefront"):
        r = self.client.get(
            "/customerlogin/auth/anonymous/login",
            query_string={"tenant": tenant, "client_id": client_id},
        )
        if r.status_code == 200:
            self.anonymous = r.json["access_token"]
        return r

    def _auth(self, token):
        return {"Authorization": f"Bearer {token}"} if token else {}

    def login(self, email="alice@acme.test", password=DEMO_PASSWORD, tenant=TENANT, token=None):
        return self.client.post(
            f"/customer/{tenant}/login",
            json={"email": email, "password": password},
            headers=self._auth(token or self.anonymous),
        )

    def refresh(self, refresh_token, entity=None, tenant=TENANT, token=None):
        query = {"refreshToken": refresh_token}
        if entity is not None:
            query["legalEntityId"] = entity
        return self.client.get(
            f"/customer/{tenant}/refreshauthtoken",
            query_string=query,
            headers=self._auth(token or self.anonymous),
        )

    def validate(self, access_token, tenant=TENANT):
        return self.client.get(
            f"/customer/{tenant}/validateauthtoken", headers=self._auth(access_token)
        )

    def logout(self, access_token, tenant=TENANT):
        return self.client.get(
            f"/customer/{tenant}/logout",
            query_string={"accessToken": access_token},
            headers=self._auth(access_token),
        )

    def me(self, token, tenant=TENANT):
        return self.client.get(f"/customer/{tenant}/me", headers=self._auth(token))

    def iam(self, method, path, token, json=None, tenant=TENANT):
        return self.client.open(
            f"/iam/{tenant}{path}", method=method, json=json, headers=self._auth(token)
        )


@pytest.fixture
def emporix(client) -> Emporix:
    shop = Emporix(client)
    assert shop.anonymous_login().status_code == 200
    return shop


def logged_in(emporix: Emporix, entity: str | None = "acme", email="alice@acme.test") -> dict:
    r = emporix.login(email=email)
    assert r.status_code == 200, r.json
    if entity is None:
        return r.json
    r = emporix.refresh(r.json["refresh_token"], entity)
    assert r.status_code == 200, r.json
    return r.json


def group_id(app, entity: str, code: str) -> str:
    with app.app_context():
        found = db.session.scalars(
            select(CustomerGroup.id).where(
                CustomerGroup.legal_entity_id == entity, CustomerGroup.code == code
            )
        ).one()
        db.session.rollback()
    return found


# -- the seed story, through the Emporix paths only ------------------------------------------


def test_seed_story_through_emporix_paths(client, schemas):
    shop = Emporix(client)
    r = shop.anonymous_login()
    assert r.status_code == 200
    check(schemas, "EmporixAnonymousToken", r.json)
    assert r.json["scope"] == f"tenant={TENANT}"

    r = shop.login()
    assert r.status_code == 200, r.json
    check(schemas, "EmporixCustomerToken", r.json)
    login = r.json
    assert header_of(login["access_token"])["typ"] == "at+jwt"  # our RFC 9068 access token
    assert claims_of(login["access_token"])["sid"] == login["session_id"]

    r = shop.refresh(login["refresh_token"], "acme")
    assert r.status_code == 200, r.json
    check(schemas, "EmporixRefreshCustomerToken", r.json)
    acme = r.json
    assert acme["session_id"] == login["session_id"]
    assert acme["refresh_token"] != login["refresh_token"]  # rotated
    r = shop.validate(acme["access_token"])
    assert r.status_code == 200
    check(schemas, "EmporixValidateTokenResponse", r.json)
    assert r.json["legalEntityId"] == "acme"
    assert r.json["email"] == "alice@acme.test"
    assert r.json["sessionId"] == login["session_id"]
    assert "order.order_read_le" in r.json["scope"].split()
    assert f"tenant={TENANT}" in r.json["scope"].split()
    assert "tenant=" not in claims_of(acme["access_token"])["scope"]  # this layer only

    r = shop.refresh(acme["refresh_token"], "globex")
    assert r.status_code == 200, r.json
    globex = r.json
    r = shop.validate(globex["access_token"])
    assert r.json["legalEntityId"] == "globex"
    assert "order.order_read_le" not in r.json["scope"].split()

    # An entity alice is not assigned to: refused, and the presented token stays valid.
    r = shop.refresh(globex["refresh_token"], "acme-logistics")
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)
    assert r.json["fault"]["faultstring"]
    r = shop.refresh(globex["refresh_token"])
    assert r.status_code == 200, r.json
    current = r.json
    assert shop.validate(current["access_token"]).json["legalEntityId"] == "globex"

    r = shop.logout(current["access_token"])
    assert r.status_code == 204
    r = shop.validate(current["access_token"])
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)
    assert shop.refresh(current["refresh_token"]).status_code == 401  # the session is gone


def test_scopes_equal_the_token_endpoint(emporix, storefront):
    """For the same customer and entity, the layer and /oauth/token grant the same scopes."""
    for email in ("alice@acme.test", "bob@acme.test"):
        for entity in ("acme", "globex"):
            ours = storefront.login(username=email)
            assert ours.status_code == 200
            direct = storefront.refresh(ours.json["refresh_token"], legal_entity_id=entity)
            layered = emporix.refresh(emporix.login(email=email).json["refresh_token"], entity)
            if email == "bob@acme.test" and entity == "globex":
                assert direct.status_code == 400 and layered.status_code == 401
                continue
            assert direct.status_code == 200 and layered.status_code == 200
            expected = set(direct.json["scope"].split())
            assert set(claims_of(layered.json["access_token"])["scope"].split()) == expected
            validated = emporix.validate(layered.json["access_token"]).json["scope"].split()
            assert set(validated) == expected | {f"tenant={TENANT}"}


# -- refresh: rotation, grace, reuse detection are the token endpoint's -----------------------


def test_refresh_replay_in_grace_then_reuse_detected(app, emporix):
    login = emporix.login().json
    first = emporix.refresh(login["refresh_token"], "acme")
    again = emporix.refresh(login["refresh_token"], "acme")  # a retry within the grace window
    assert again.status_code == 200 and again.json == first.json
    other = emporix.refresh(login["refresh_token"], "globex")  # a different request: refused
    assert other.status_code == 401
    # The family is revoked on reuse outside the grace window: simulated by a zero window.
    settings = app.extensions["token_endpoint"].settings
    app.extensions["token_endpoint"].settings = replace(settings, refresh_grace_seconds=0)
    try:
        assert emporix.refresh(login["refresh_token"]).status_code == 401
    finally:
        app.extensions["token_endpoint"].settings = settings
    assert emporix.validate(first.json["access_token"]).status_code == 401
    assert emporix.refresh(first.json["refresh_token"]).status_code == 401


def test_refresh_accepts_the_customers_own_access_token(emporix):
    login = emporix.login().json
    r = emporix.refresh(login["refresh_token"], "acme", token=login["access_token"])
    assert r.status_code == 200


# -- the anonymous token ---------------------------------------------------------------------


def test_login_requires_an_anonymous_token(client, emporix, schemas):
    shop = Emporix(client)
    r = shop.login()
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    customer = emporix.login().json["access_token"]
    assert emporix.login(token=customer).status_code == 401  # not a customer's token either


def test_anonymous_token_is_nobodys_access_token(app, client, emporix, introspect):
    token = emporix.anonymous
    assert header_of(token)["typ"] == "anon+jwt"
    claims = claims_of(token)
    assert "sid" not in claims and claims["sub"].startswith("anon_")
    # This layer reads it first; the key ring's cache must not hand it out as an access token.
    assert emporix.me(token).status_code == 200
    keyring = app.extensions["keyring"]
    assert keyring.decode(token, typ="anon+jwt")["sub"] == claims["sub"]
    assert keyring.decode(token) is None
    assert introspect(token) == {"active": False}
    r = client.get("/self-service/members", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    r = client.get("/admin/customers", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert emporix.validate(token).status_code == 401
    assert emporix.logout(token).status_code == 401
    assert emporix.iam("GET", "/groups", token).status_code == 401


def test_anonymous_me_and_refresh(emporix, schemas, client):
    r = emporix.me(emporix.anonymous)
    assert r.status_code == 200
    check(schemas, "EmporixCustomer", r.json)
    assert r.json["accounts"] == []
    first = client.get("/customerlogin/auth/anonymous/login?tenant=demo&client_id=storefront")
    r = client.get(
        "/customerlogin/auth/anonymous/refresh",
        query_string={
            "tenant": TENANT,
            "client_id": "storefront",
            "refresh_token": first.json["refresh_token"],
        },
    )
    assert r.status_code == 200
    check(schemas, "EmporixAnonymousToken", r.json)
    assert r.json["sessionId"] == first.json["sessionId"]
    r = client.get(
        "/customerlogin/auth/anonymous/refresh",
        query_string={"tenant": TENANT, "client_id": "storefront", "refresh_token": "nope"},
    )
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)


def test_anonymous_login_checks_tenant_and_client(client, schemas):
    shop = Emporix(client)
    r = shop.anonymous_login(tenant="other")
    assert r.status_code == 404
    check(schemas, "EmporixError", r.json)
    r = shop.anonymous_login(client_id="order-service")  # not the storefront client
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)
    r = client.get("/customerlogin/auth/anonymous/login?tenant=demo")
    assert r.status_code == 400
    check(schemas, "EmporixError", r.json)


# -- login -----------------------------------------------------------------------------------


def test_login_failures_are_one_answer_then_throttled(app, emporix, schemas):
    wrong = emporix.login(password="wrong password")
    unknown = emporix.login(email="nobody@acme.test", password="wrong password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json
    check(schemas, "EmporixError", wrong.json)
    free = app.config["SETTINGS"].login_throttle_free_attempts
    statuses = [emporix.login(password="wrong password").status_code for _ in range(free + 1)]
    assert statuses[-1] == 429
    r = emporix.login()  # the right password while locked: still 429
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    check(schemas, "EmporixError", r.json)


@pytest.mark.parametrize(
    "body",
    [None, [], {"email": "alice@acme.test"}, {"email": 1, "password": "x"}, {"password": "x"}],
)
def test_login_bad_bodies_are_400(emporix, schemas, body):
    r = emporix.client.post(
        f"/customer/{TENANT}/login",
        json=body,
        headers={"Authorization": f"Bearer {emporix.anonymous}"},
    )
    assert r.status_code == 400
    check(schemas, "EmporixError", r.json)


def test_login_not_json_is_400(emporix, schemas):
    r = emporix.client.post(
        f"/customer/{TENANT}/login",
        data="email=alice",
        headers={"Authorization": f"Bearer {emporix.anonymous}", "Content-Type": "text/plain"},
    )
    assert r.status_code == 400
    check(schemas, "EmporixError", r.json)


def test_other_tenants_are_404(emporix, schemas):
    token = logged_in(emporix)["access_token"]
    for r in (
        emporix.login(tenant="other"),
        emporix.validate(token, tenant="other"),
        emporix.me(token, tenant="other"),
        emporix.refresh("x", tenant="other"),
    ):
        assert r.status_code == 404
        check(schemas, "EmporixError", r.json)
    r = emporix.iam("GET", "/groups", token, tenant="other")
    assert r.status_code == 404
    check(schemas, "EmporixIamError", r.json)


def test_refresh_bad_input_is_4xx(emporix, schemas):
    r = emporix.client.get(
        f"/customer/{TENANT}/refreshauthtoken",
        headers={"Authorization": f"Bearer {emporix.anonymous}"},
    )
    assert r.status_code == 400
    check(schemas, "EmporixError", r.json)
    for query in ({"refreshToken": "x" * 300}, {"refreshToken": "a\x00b"}):
        r = emporix.client.get(
            f"/customer/{TENANT}/refreshauthtoken",
            query_string=query,
            headers={"Authorization": f"Bearer {emporix.anonymous}"},
        )
        assert r.status_code == 400
    r = emporix.refresh("unknown")
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)


# -- logout, validate, me --------------------------------------------------------------------


def test_logout_deny_lists_access_tokens_at_once(emporix, introspect):
    tokens = logged_in(emporix)
    assert introspect(tokens["access_token"])["active"] is True
    assert emporix.logout(tokens["access_token"]).status_code == 204
    assert introspect(tokens["access_token"]) == {"active": False}


def test_logout_of_another_customer_is_refused(emporix, schemas):
    alice = logged_in(emporix)["access_token"]
    bob = logged_in(emporix, email="bob@acme.test")["access_token"]
    r = emporix.client.get(
        f"/customer/{TENANT}/logout",
        query_string={"accessToken": alice},
        headers={"Authorization": f"Bearer {bob}"},
    )
    assert r.status_code == 403
    check(schemas, "EmporixError", r.json)
    assert emporix.validate(alice).status_code == 200


def test_me_is_what_we_hold(emporix, schemas):
    tokens = logged_in(emporix)
    r = emporix.me(tokens["access_token"])
    assert r.status_code == 200
    check(schemas, "EmporixCustomer", r.json)
    assert r.json["id"] == ALICE
    assert r.json["contactEmail"] == "alice@acme.test"
    assert r.json["b2b"]["legalEntities"] == [
        {"id": "acme", "name": "ACME Corp"},
        {"id": "globex", "name": "Globex"},
    ]
    r = emporix.me("not-a-token")
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)


# -- IAM groups over company.py -------------------------------------------------------------


def test_iam_groups_are_the_entitys_own(app, emporix, schemas):
    token = logged_in(emporix, "acme")["access_token"]
    r = emporix.iam("GET", "/groups", token)
    assert r.status_code == 200
    check_list(schemas, "EmporixGroup", r.json)
    assert {g["b2b"]["legalEntityId"] for g in r.json} == {"acme"}
    assert {g["code"] for g in r.json} >= {"ADMIN", "BUYER"}
    buyer = group_id(app, "acme", "BUYER")
    r = emporix.iam("GET", f"/groups/{buyer}/users", token)
    assert r.status_code == 200
    check_list(schemas, "EmporixAssignment", r.json)
    assert [a["userId"] for a in r.json] == [BOB]
    # Another company's group is not there.
    r = emporix.iam("GET", f"/groups/{group_id(app, 'globex', 'ADMIN')}/users", token)
    assert r.status_code == 404
    check(schemas, "EmporixIamError", r.json)


def test_iam_add_and_remove_member(app, emporix, schemas):
    token = logged_in(emporix, "acme")["access_token"]
    requester = group_id(app, "acme", "REQUESTER")
    r = emporix.iam("POST", f"/groups/{requester}/users", token, json={"userId": BOB})
    assert r.status_code == 201
    check(schemas, "EmporixAssignmentId", r.json)
    users = emporix.iam("GET", f"/groups/{requester}/users", token).json
    assert [a["userId"] for a in users] == [BOB]
    r = emporix.iam("DELETE", f"/groups/{requester}/users/{BOB}", token)
    assert r.status_code == 204
    assert emporix.iam("GET", f"/groups/{requester}/users", token).json == []


def test_iam_rules_are_company_rules(app, emporix, schemas):
    alice = logged_in(emporix, "acme")["access_token"]
    admin = group_id(app, "acme", "ADMIN")
    # The last admin stays.
    r = emporix.iam("DELETE", f"/groups/{admin}/users/{ALICE}", alice)
    assert r.status_code == 409
    check(schemas, "EmporixIamError", r.json)
    # Outside the company, or not a member: Emporix documents 403 (not 404) for a removal.
    for group, user in ((admin, "cus_nobody"), (group_id(app, "acme", "REQUESTER"), BOB)):
        r = emporix.iam("DELETE", f"/groups/{group}/users/{user}", alice)
        assert r.status_code == 403
        check(schemas, "EmporixIamError", r.json)
    r = emporix.iam("DELETE", f"/groups/{group_id(app, 'globex', 'CONTACT')}/users/{ALICE}", alice)
    assert r.status_code == 403
    # A customer of another company is not a member here.
    r = emporix.iam("POST", f"/groups/{admin}/users", alice, json={"userId": "cus_nobody"})
    assert r.status_code == 404
    check(schemas, "EmporixIamError", r.json)
    # bob (BUYER) lacks iam.assignment_create_own: no self-promotion.
    bob = logged_in(emporix, "acme", email="bob@acme.test")["access_token"]
    r = emporix.iam("POST", f"/groups/{admin}/users", bob, json={"userId": BOB})
    assert r.status_code == 403
    check(schemas, "EmporixIamError", r.json)
    # Unsupported user types and bodies.
    for body in ({"userId": BOB, "userType": "EMPLOYEE"}, {}, []):
        r = emporix.iam("POST", f"/groups/{admin}/users", alice, json=body)
        assert r.status_code == 400
        check(schemas, "EmporixIamError", r.json)


def test_iam_needs_a_customer_token(emporix, schemas):
    r = emporix.iam("GET", "/groups", None)
    assert r.status_code == 401
    check(schemas, "EmporixIamError", r.json)
    assert "fault" in r.json
    # A token acting for no entity cannot manage a company.
    token = emporix.login().json["access_token"]
    if claims_of(token).get("legal_entity_id") is None:
        assert emporix.iam("GET", "/groups", token).status_code == 403


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["Demo", "ab", "1demo", "a" * 17, "de-mo"])
def test_tenant_setting_is_validated(tenant):
    with pytest.raises(ConfigError):
        Settings.from_env({"TOKEN_SERVICE_TENANT": tenant})


def test_tenant_setting_default_and_override():
    assert Settings.from_env({}).tenant == "demo"
    assert Settings.from_env({"TOKEN_SERVICE_TENANT": "shop42"}).tenant == "shop42"


# -- the models that validate the layer's input are the ones the document publishes ------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"email": "a" * 321, "password": "x"}, "'email' is too long."),
        (
            {"email": "alice@acme.test", "password": "a\x00b"},
            "'password' contains a control character.",
        ),
        (
            {"email": "alice@acme.test", "password": ""},
            "'password' is required and must be a string.",
        ),
        ([], "The request body must be a JSON object."),
    ],
)
def test_login_body_is_checked_by_its_published_model(emporix, schemas, body, message):
    r = emporix.client.post(
        f"/customer/{TENANT}/login",
        json=body,
        headers={"Authorization": f"Bearer {emporix.anonymous}"},
    )
    assert (r.status_code, r.json["message"]) == (400, message)
    check(schemas, "EmporixError", r.json)
    published = schemas["components"]["schemas"]["EmporixPasswordAuthentication"]
    assert published["properties"]["email"]["maxLength"] == 320


def test_query_rules_of_the_models(client, schemas):
    base = f"/customerlogin/auth/anonymous/login?tenant={TENANT}&client_id=storefront"
    r = client.get(base + "&client_id=storefront")
    assert (r.status_code, r.json["message"]) == (400, "'client_id' is repeated.")
    check(schemas, "EmporixError", r.json)
    r = client.get(f"/customerlogin/auth/anonymous/login?tenant={TENANT}&client_id=")
    assert (r.status_code, r.json["message"]) == (400, "Missing 'client_id' parameter.")
    r = client.get(f"/customerlogin/auth/anonymous/login?tenant={TENANT}&client_id={'c' * 129}")
    assert (r.status_code, r.json["message"]) == (400, "'client_id' is too long.")


def test_iam_assignment_body_is_checked_by_its_published_model(emporix, schemas, app):
    alice = logged_in(emporix)["access_token"]
    admin = group_id(app, "acme", "ADMIN")
    for body, message in (
        ({"userId": "u" * 65}, "'userId' is too long."),
        ({"userId": BOB, "userType": "EMPLOYEE"}, "Only userType CUSTOMER is supported."),
        ({"userId": 7}, "'userId' is required and must be a string."),
    ):
        r = emporix.iam("POST", f"/groups/{admin}/users", alice, json=body)
        assert (r.status_code, r.json["message"]) == (400, message)
        check(schemas, "EmporixIamError", r.json)


# -- consent: other clients' tokens get what their consent releases (issue 25, defect 4) ------

PARTNER = "partner"
PARTNER_CEILING = (
    "openid email profile order.order_read_le customer.customerprofile_view "
    "customermanagement.legalentity_read_own customer.customer_read_own"
)


def partner_tokens(app, client, scope: str, email="bob@acme.test", entity="acme") -> dict:
    """A third-party client's tokens for `email`, after the customer allowed `scope` on the
    consent page (the code flow with PKCE)."""
    from frontdoor import REDIRECT_URI, Browser, Form, authorize_params, callback

    from token_service.clients import forget_client
    from token_service.models import Client
    from token_service.services.clients import create_client

    with app.app_context():
        if db.session.get(Client, PARTNER) is None:
            create_client(
                PARTNER,
                name="Partner app",
                confidential=False,
                grant_types=["authorization_code", "refresh_token"],
                scope=PARTNER_CEILING,
                first_party=False,
                redirect_uris=[REDIRECT_URI],
            )
            db.session.commit()
            forget_client()
        db.session.rollback()
    client = app.test_client()  # a browser of its own: no sign-in to reuse
    browser = Browser(client)
    params = authorize_params(client_id=PARTNER, scope=scope, legal_entity_id=entity)
    page = browser.sign_in(browser.authorize(params), email=email)
    assert Form(page.get_data(as_text=True)).buttons == ["Allow", "Deny"]
    answer = callback(browser.submit(page, decision="allow"))
    r = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": answer["code"],
            "redirect_uri": REDIRECT_URI,
            "client_id": PARTNER,
            "code_verifier": params["_verifier"],
        },
    )
    assert r.status_code == 200, r.json
    return r.json


def userinfo(client, token: str) -> dict:
    return client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"}).json


def test_third_party_token_reveals_no_email_nor_companies(app, client, emporix, schemas):
    """Issue 25 #4: bob allowed a third-party client only `openid order.order_read_le`; its
    UserInfo has no email, and neither may this layer give it his email or his companies."""
    tokens = partner_tokens(app, client, "openid order.order_read_le")
    token = tokens["access_token"]
    assert claims_of(token)["client_id"] == PARTNER
    assert "email" not in userinfo(client, token)

    r = emporix.me(token)
    assert r.status_code == 403, r.json
    check(schemas, "EmporixError", r.json)
    assert "bob@acme.test" not in r.get_data(as_text=True)
    assert "ACME" not in r.get_data(as_text=True)

    r = emporix.validate(token)
    assert r.status_code == 200, r.json
    check(schemas, "EmporixValidateTokenResponse", r.json)
    assert r.json["email"] is None
    assert "bob@acme.test" not in r.get_data(as_text=True)
    assert r.json["sessionId"] == claims_of(token)["sid"]


def test_third_party_profile_without_email_or_companies(app, client, emporix, schemas):
    token = partner_tokens(app, client, "openid customer.customerprofile_view")["access_token"]
    r = emporix.me(token)
    assert r.status_code == 200, r.json
    check(schemas, "EmporixCustomer", r.json)
    assert r.json["id"] == BOB
    assert r.json["accounts"] == []
    assert "contactEmail" not in r.json and "b2b" not in r.json and "businessModel" not in r.json
    assert "bob@acme.test" not in r.get_data(as_text=True)
    assert emporix.validate(token).json["email"] is None


def test_third_party_with_email_consented_sees_the_email(app, client, emporix, schemas):
    token = partner_tokens(app, client, "openid email customer.customerprofile_view")[
        "access_token"
    ]
    assert userinfo(client, token)["email"] == "bob@acme.test"
    r = emporix.me(token)
    assert r.status_code == 200, r.json
    check(schemas, "EmporixCustomer", r.json)
    assert r.json["contactEmail"] == "bob@acme.test"
    assert r.json["accounts"] == [{"id": "bob@acme.test"}]
    assert "b2b" not in r.json  # the companies were not consented to
    r = emporix.validate(token)
    assert r.json["email"] == "bob@acme.test"
    # `email` alone, without the profile scope: the validation tells it, the profile is closed.
    token = partner_tokens(app, client, "openid email")["access_token"]
    assert emporix.validate(token).json["email"] == "bob@acme.test"
    assert emporix.me(token).status_code == 403


def test_third_party_with_companies_consented_sees_them(app, client, emporix, schemas):
    scope = "openid customer.customerprofile_view customermanagement.legalentity_read_own"
    token = partner_tokens(app, client, scope, email="alice@acme.test")["access_token"]
    r = emporix.me(token)
    assert r.status_code == 200, r.json
    check(schemas, "EmporixCustomer", r.json)
    assert r.json["b2b"]["legalEntities"] == [
        {"id": "acme", "name": "ACME Corp"},
        {"id": "globex", "name": "Globex"},
    ]
    assert "contactEmail" not in r.json


def test_storefront_tokens_are_served_fully(emporix, schemas):
    """The storefront client's tokens (this layer's own client) get everything, as before,
    although its ceiling holds neither `email` nor `openid`."""
    for email in ("alice@acme.test", "bob@acme.test"):
        token = logged_in(emporix, email=email)["access_token"]
        r = emporix.me(token)
        assert r.status_code == 200
        assert r.json["contactEmail"] == email
        assert r.json["b2b"]["legalEntities"]
        assert emporix.validate(token).json["email"] == email


def test_third_party_token_cannot_log_the_storefront_session_out(app, client, emporix, schemas):
    storefront = logged_in(emporix, email="bob@acme.test")["access_token"]
    partner = partner_tokens(app, client, "openid order.order_read_le")["access_token"]
    r = client.get(
        f"/customer/{TENANT}/logout",
        query_string={"accessToken": storefront},
        headers={"Authorization": f"Bearer {partner}"},
    )
    assert r.status_code == 403
    check(schemas, "EmporixError", r.json)
    assert emporix.validate(storefront).status_code == 200
    # Its own session it may end (as /oauth/revoke would).
    assert emporix.logout(partner).status_code == 204
    assert emporix.validate(partner).status_code == 401
    assert emporix.validate(storefront).status_code == 200


def test_third_party_token_does_not_authorize_refreshauthtoken(app, client, emporix, schemas):
    login = emporix.login(email="bob@acme.test").json
    partner = partner_tokens(app, client, "openid order.order_read_le")["access_token"]
    r = emporix.refresh(login["refresh_token"], "acme", token=partner)
    assert r.status_code == 401
    check(schemas, "EmporixError", r.json)
    # The refusal spent nothing: the storefront's own token still refreshes.
    r = emporix.refresh(login["refresh_token"], "acme", token=login["access_token"])
    assert r.status_code == 200, r.json


def test_third_party_iam_needs_the_consented_scope(app, client, emporix, schemas):
    """The /iam paths are self-service's: any client's token with the path's scope, consented
    and held now, as on /self-service; without it a 403."""
    token = partner_tokens(app, client, "openid order.order_read_le", email="alice@acme.test")[
        "access_token"
    ]
    r = emporix.iam("GET", "/groups", token)
    assert r.status_code == 403
    check(schemas, "EmporixIamError", r.json)
    token = partner_tokens(
        app, client, "openid customer.customer_read_own", email="alice@acme.test"
    )["access_token"]
    assert emporix.iam("GET", "/groups", token).status_code == 200


# -- anonymous sessions are limited per client address (issue 25, defect 8) -------------------

ANONYMOUS_LOGIN = f"/customerlogin/auth/anonymous/login?tenant={TENANT}&client_id=storefront"


def anonymous_refresh(client, refresh_token: str, **kwargs):
    return client.get(
        "/customerlogin/auth/anonymous/refresh",
        query_string={"tenant": TENANT, "client_id": "storefront", "refresh_token": refresh_token},
        **kwargs,
    )


@pytest.fixture
def cost(app, monkeypatch):
    """Counts what anonymous tokens cost: signatures made and anonymous sessions stored."""
    from token_service.keys import SigningKey

    counted = {"signed": 0, "stored": 0}
    encode, store = SigningKey.encode_jwt, app.extensions["token_store"]
    store_set = store.set

    def signing(self, claims, typ="at+jwt"):
        counted["signed"] += 1
        return encode(self, claims, typ)

    def storing(key, value, ttl):
        counted["stored"] += key.startswith("emporix:anonymous:")
        return store_set(key, value, ttl)

    monkeypatch.setattr(SigningKey, "encode_jwt", signing)
    monkeypatch.setattr(store, "set", storing)
    return counted


def test_anonymous_logins_are_limited_per_address(app, client, schemas, cost):
    """Issue 25 #8: 300 anonymous logins from one address were all 200. The default limit
    (60 a minute) lets a burst through, then 429 with Retry-After, in Emporix's error shape;
    a refused call signs nothing and stores no session."""
    limit = app.config["SETTINGS"].anonymous_rate_limit
    assert limit == 60
    statuses = [client.get(ANONYMOUS_LOGIN).status_code for _ in range(limit)]
    assert statuses == [200] * limit
    assert cost == {"signed": limit, "stored": limit}
    for _ in range(5):
        r = client.get(ANONYMOUS_LOGIN)
        assert r.status_code == 429
        check(schemas, "EmporixError", r.json)
        assert r.json["type"] == "too_many_requests"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.headers["Cache-Control"] == "no-store"
    assert cost == {"signed": limit, "stored": limit}
    # Another address is not limited by this one's calls.
    r = client.get(ANONYMOUS_LOGIN, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert r.status_code == 200


def test_forwarded_for_does_not_escape_the_limit(app, client, monkeypatch):
    """Without trusted proxies X-Forwarded-For is the client's word, not its address."""
    monkeypatch.setitem(
        app.config, "SETTINGS", replace(app.config["SETTINGS"], anonymous_rate_limit=3)
    )
    statuses = [
        client.get(ANONYMOUS_LOGIN, headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
        for n in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]


def test_ipv6_addresses_count_by_their_64(app, client, monkeypatch):
    """One host usually holds a whole /64: its addresses share one allowance."""
    monkeypatch.setitem(
        app.config, "SETTINGS", replace(app.config["SETTINGS"], anonymous_rate_limit=2)
    )
    statuses = [
        client.get(ANONYMOUS_LOGIN, environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{n:x}"})
        for n in range(1, 4)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    other = client.get(ANONYMOUS_LOGIN, environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"})
    assert other.status_code == 200


def test_anonymous_refreshes_share_the_limit(app, client, schemas, monkeypatch, cost):
    monkeypatch.setitem(
        app.config, "SETTINGS", replace(app.config["SETTINGS"], anonymous_rate_limit=3)
    )
    first = client.get(ANONYMOUS_LOGIN).json
    assert anonymous_refresh(client, first["refresh_token"]).status_code == 200
    assert anonymous_refresh(client, "not-a-refresh-token").status_code == 401
    signed = cost["signed"]
    r = anonymous_refresh(client, first["refresh_token"])
    assert r.status_code == 429
    check(schemas, "EmporixError", r.json)
    assert int(r.headers["Retry-After"]) >= 1
    assert client.get(ANONYMOUS_LOGIN).status_code == 429
    assert cost["signed"] == signed  # refused: nothing signed
    # Elsewhere the same refresh token still works: the limit is the address's, not the session's.
    r = anonymous_refresh(client, first["refresh_token"], environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert r.status_code == 200 and r.json["sessionId"] == first["sessionId"]


def test_anonymous_limit_fails_open_when_the_store_cannot_count(app, client, monkeypatch):
    """Like the login throttle (DESIGN §6: open for logins): a store that cannot count does
    not stop visitors; one that cannot keep the session either is a 503 with Retry-After."""
    monkeypatch.setitem(
        app.config, "SETTINGS", replace(app.config["SETTINGS"], anonymous_rate_limit=1)
    )
    store = app.extensions["token_store"]

    def down(*args):
        raise StoreUnavailable("down")

    monkeypatch.setattr(store, "incr", down)
    assert [client.get(ANONYMOUS_LOGIN).status_code for _ in range(3)] == [200, 200, 200]
    monkeypatch.setattr(store, "set", down)
    r = client.get(ANONYMOUS_LOGIN)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"


def test_anonymous_limit_setting():
    assert Settings.from_env({}).anonymous_rate_limit == 60
    env = {"TOKEN_SERVICE_EMPORIX_ANONYMOUS_RATE_LIMIT": "0"}
    assert Settings.from_env(env).anonymous_rate_limit == 0  # no limit
    with pytest.raises(ConfigError):
        Settings.from_env({"TOKEN_SERVICE_EMPORIX_ANONYMOUS_RATE_LIMIT": "-1"})


def test_no_limit_when_the_setting_is_zero(app, client, monkeypatch):
    monkeypatch.setitem(
        app.config, "SETTINGS", replace(app.config["SETTINGS"], anonymous_rate_limit=0)
    )
    store = app.extensions["token_store"]

    def counting(*args):
        raise AssertionError("nothing to count")

    monkeypatch.setattr(store, "incr", counting)
    assert client.get(ANONYMOUS_LOGIN).status_code == 200
