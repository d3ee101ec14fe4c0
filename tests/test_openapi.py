"""The OpenAPI document: a valid OpenAPI 3.1 description of every route, and the app keeps to
it. Schemathesis generates requests from the document (valid ones and invalid ones), sends them
to the live app in-process, and checks each answer: never a 5xx, only documented statuses and
content types, and bodies and headers that match their schemas.

OPENAPI_FUZZ_EXAMPLES (default 25) cases per operation and mode: about 2,000 requests and 20-30 s
per backend.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from token_service.api.openapi import build_document
from token_service.extensions import db
from token_service.models import Customer, CustomerGroup, Session


def _suite_conftest():
    """tests/conftest.py itself: `import conftest` may find another suite's conftest first."""
    path = Path(__file__).with_name("conftest.py")
    spec = importlib.util.spec_from_file_location("_suite_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_conftest = _suite_conftest()
reset, Storefront = _conftest.reset, _conftest.Storefront
EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "25"))
IGNORED_RULES = {"/static/<path:filename>"}  # Flask's default, unused
# Refusing invalid data: the statuses the document gives for it (412: a malformed If-Match).
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 409, 412, 415, 422, 429]
            }
        }
    }
)
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def document(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json


def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_document_is_reproducible(app, document):
    assert build_document(app.config["SETTINGS"].issuer) == document


def test_every_route_is_documented_and_nothing_else(app, document):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule in IGNORED_RULES:
            continue
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", f"{{{name}}}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    for public in (
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/healthz",
        "/readyz",
    ):
        assert public in document["paths"]


def test_admin_operations_declare_scopes_and_errors(document):
    for path, item in document["paths"].items():
        if not path.startswith("/admin/"):
            continue
        for method, op in item.items():
            (requirement,) = op["security"]
            expected = "admin.read" if method == "get" else "admin.manage"
            assert requirement == {"adminToken": [expected]}, (path, method)
            assert {"401", "403", "503"} <= set(op["responses"]), (path, method)
            if "requestBody" in op:
                assert {"400", "422"} <= set(op["responses"]), (path, method)
                body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                name = body.rsplit("/", 1)[1]
                assert document["components"]["schemas"][name]["additionalProperties"] is False


# -- schemathesis against the live app ---------------------------------------------------------


def admin_token(app) -> str:
    client = app.test_client()
    r = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("admin-cli", app.secrets["admin-cli"]),
    )
    return r.json["access_token"]


def emporix_token(app, path: str) -> str:
    """The token an Emporix storefront sends: the anonymous one to log in or refresh, else
    alice's access token (acting for ACME, her default)."""
    client = app.test_client()
    tenant = app.config["SETTINGS"].tenant
    if path.endswith(("/login", "/refreshauthtoken")):
        r = client.get(f"/customerlogin/auth/anonymous/login?tenant={tenant}&client_id=storefront")
        return r.json["access_token"]
    return Storefront(client).login().json["access_token"]


def known_ids(app) -> dict[str, list[str]]:
    """Real identifiers for path parameters, so that cases reach existing rows too. admin-cli
    is left out: a case that narrows its ceiling would lock the rest of the run out."""
    Storefront(app.test_client()).login()
    with app.app_context():
        ids = {
            "entity_id": ["acme", "globex", "acme-logistics"],
            "customer_id": list(db.session.scalars(select(Customer.id))),
            "group_id": list(db.session.scalars(select(CustomerGroup.id).limit(4))),
            "client_id": ["storefront", "order-service"],
            "session_id": list(db.session.scalars(select(Session.id))),
            "name": ["order.order_read_le", "admin.read"],
            "tenant": [app.config["SETTINGS"].tenant],
            "invitation_id": ["inv_unknown"],  # the demo has none
        }
        db.session.rollback()
    return ids


def cases(operation, mode: GenerationMode, ids: dict[str, list[str]]):
    """Generated cases, half of them with real identifiers in the path."""
    generated = operation.as_strategy(generation_mode=mode)
    names = [p.name for p in operation.path_parameters]
    if not names:
        return generated
    real = st.fixed_dictionaries({n: st.sampled_from(ids[n]) for n in names}).flatmap(
        lambda values: operation.as_strategy(generation_mode=mode, path_parameters=values)
    )
    return st.one_of(real, generated)


def fuzz(operation, mode: GenerationMode, ids: dict, headers: dict) -> None:
    """Up to EXAMPLES cases of one operation in one mode, each answer checked."""
    checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(operation, mode, ids))
    def run(case):
        if case.headers:  # the token is ours to give
            case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
        response = case.call_and_validate(headers=headers, checks=checks)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)

    try:
        run()
    except Unsatisfiable:
        # Nothing to make invalid: no parameters, no body (e.g. GET /healthz).
        if mode is GenerationMode.POSITIVE:
            raise


PARTS = 4  # the operations in slices, so that parallel test workers share them


def test_every_documented_operation_is_loaded(app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = sum(len(item) for item in schema.raw_schema["paths"].values())
    assert len(operations) == documented - 1  # all but GET /openapi.json, the document itself


def test_activation_page_is_documented_as_its_form_sends_it(document):
    """POST /activate's form: exactly the fields the page sends."""
    body = document["paths"]["/activate"]["post"]["requestBody"]["content"]
    ref = body["application/x-www-form-urlencoded"]["schema"]["$ref"]
    form = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    fields = ["csrf_token", "token", "password", "confirm_password"]
    assert sorted(form["properties"]) == sorted(fields)
    assert sorted(form["required"]) == sorted(fields)
    for method in ("get", "post"):
        responses = document["paths"]["/activate"][method]["responses"]
        assert set(responses) == {"200", "400", "404"}
        assert "X-Frame-Options" in responses["200"]["headers"]


@pytest.mark.parametrize("part", range(PARTS))
def test_app_conforms_to_its_document(app, isolated_keys, part):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=CONFIG)
    for index, result in enumerate(schema.get_all_operations()):
        if index % PARTS != part:
            continue
        operation = result.ok()
        # Each operation starts from the demo data: a DELETE cannot starve the next ones.
        app.secrets = reset(app)
        ids = known_ids(app)
        headers = {}
        if operation.path.startswith("/admin/"):
            headers["Authorization"] = f"Bearer {admin_token(app)}"
        elif operation.path.startswith(("/customer/", "/iam/")):
            headers["Authorization"] = f"Bearer {emporix_token(app, operation.path)}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Negative cases of a bearer scheme are a malformed Authorization header: ours
            # would replace it and the case would no longer be negative.
            bearer = operation.path.startswith(("/customer/", "/iam/"))
            fuzz(
                operation, mode, ids, {} if bearer and mode is GenerationMode.NEGATIVE else headers
            )
