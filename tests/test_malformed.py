"""Malformed token requests get RFC 6749 §5.2 errors with no-store, never a 500 (DESIGN §4)."""

from __future__ import annotations

import base64
import io
import json

import pytest

from token_service.services import clients

FORM = "application/x-www-form-urlencoded"


def post(client, body, content_type=FORM, headers=None, path="/oauth/token"):
    return client.post(path, data=body, content_type=content_type, headers=headers or {})


def assert_oauth_error(r, error, status=400):
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True))
    assert r.json["error"] == error
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Content-Type"].startswith("application/json")


def basic(value: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("", "invalid_request"),
        ("client_id=storefront", "invalid_request"),  # no grant_type
        ("grant_type=password&client_id=storefront", "invalid_request"),  # no username
        ("grant_type=password&client_id=storefront&username=a@b.c", "invalid_request"),
        ("grant_type=refresh_token&client_id=storefront", "invalid_request"),
        (
            "grant_type=refresh_token&grant_type=refresh_token&client_id=storefront&refresh_token=x",
            "invalid_request",
        ),
        (
            "grant_type=password&client_id=storefront&username=a&username=b&password=x",
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&client_id=storefront&refresh_token=" + "x" * 300,
            "invalid_request",
        ),
        (
            "grant_type=password&client_id=storefront&username=a@b.c&password=" + "x" * 2000,
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&client_id=storefront&refresh_token=x&legal_entity_id="
            + "e" * 100,
            "invalid_request",
        ),
        ("grant_type=refresh_token&client_id=storefront&refresh_token=%ff%fe", "invalid_request"),
        ("grant_type=refresh_token&client_id=storefront&refresh_token=a%00b", "invalid_request"),
        ("&".join(f"p{i}=1" for i in range(40)), "invalid_request"),
        # Supported, but not registered for the storefront (it has password and refresh_token).
        ("grant_type=authorization_code&client_id=storefront&code=x", "unauthorized_client"),
        ("grant_type=implicit&client_id=storefront", "unsupported_grant_type"),
        (
            "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&client_id=storefront",
            "unsupported_grant_type",
        ),
        ("grant_type=client_credentials&client_id=storefront", "unauthorized_client"),
        ("grant_type=password&client_id=nobody&username=a&password=b", "invalid_client"),
        ("grant_type=password&username=a&password=b", "invalid_client"),
        ("grant_type=client_credentials&client_id=admin-cli", "invalid_client"),
        ("grant_type=client_credentials&client_id=admin-cli&client_secret=wrong", "invalid_client"),
        (
            "grant_type=password&client_id=storefront&client_secret=x&username=a&password=b",
            "invalid_client",
        ),  # a public client presenting a secret
        (
            "grant_type=refresh_token&client_id=storefront&refresh_token=x&scope=%20%20",
            "invalid_grant",
        ),
    ],
)
def test_bad_bodies(client, body, error):
    r = post(client, body)
    assert_oauth_error(r, error, 401 if error == "invalid_client" else 400)
    if error == "invalid_client":
        assert r.headers["WWW-Authenticate"].startswith("Basic")


def test_oversized_body(client):
    assert_oauth_error(post(client, "grant_type=password&x=" + "a" * 20000), "invalid_request")


def test_huge_body_beyond_content_length_limit(client):
    assert_oauth_error(post(client, "a=" + "b" * (2 * 1024 * 1024)), "invalid_request")


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x", ""]
)
def test_wrong_content_type(client, content_type):
    r = post(client, "grant_type=client_credentials", content_type=content_type)
    assert_oauth_error(r, "invalid_request")


def test_json_body_is_refused(client):
    r = client.post("/oauth/token", json={"grant_type": "password"})
    assert_oauth_error(r, "invalid_request")


def test_query_string_parameters_are_not_read(client):
    r = client.post("/oauth/token?grant_type=client_credentials", data={"client_id": "storefront"})
    assert_oauth_error(r, "invalid_request")


def test_get_is_not_allowed(client):
    r = client.get("/oauth/token")
    assert r.status_code == 405
    assert r.json["error"] == "invalid_request"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic"},
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Bearer abc"},
        basic("no-colon"),
        basic(":secret-without-id"),
        basic("admin-cli:wrong"),
        basic("nobody:secret"),
        basic("storefront:"),
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
    ],
)
def test_bad_basic_auth_is_401_with_challenge(client, headers):
    r = post(client, "grant_type=client_credentials", headers=headers)
    assert_oauth_error(r, "invalid_client", 401)
    assert r.headers["WWW-Authenticate"].startswith("Basic")


def test_two_authentication_methods_are_refused(app, client):
    secret = app.secrets["admin-cli"]
    r = post(
        client,
        f"grant_type=client_credentials&client_secret={secret}",
        headers=basic(f"admin-cli:{secret}"),
    )
    assert_oauth_error(r, "invalid_request")


def test_basic_credentials_are_form_urldecoded(app, client):
    # RFC 6749 §2.3.1: the id and secret are application/x-www-form-urlencoded before Basic.
    from token_service.extensions import db

    with app.app_context():
        _, secret = clients.create_client(
            "svc:with space", confidential=True, grant_types=["client_credentials"], scope=""
        )
        db.session.commit()
    from urllib.parse import quote_plus

    r = post(
        client,
        "grant_type=client_credentials",
        headers=basic(f"{quote_plus('svc:with space')}:{quote_plus(secret)}"),
    )
    assert r.status_code == 200, r.json


def test_blank_parameters_count_as_omitted(client):
    # RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were omitted."
    r = post(client, "grant_type=password&client_id=storefront&username=&password=x")
    assert_oauth_error(r, "invalid_request")


def test_unknown_route_is_json(client):
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.json["error"] == "not_found"


def _wsgi(app, body: bytes, **environ) -> tuple[str, dict, bytes]:
    """Call the WSGI app with a hand-made environ (the test client always sets a length)."""
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/oauth/token",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_TYPE": FORM,
    }
    answer = {}

    def start_response(status, headers):
        answer["status"], answer["headers"] = status, dict(headers)

    payload = b"".join(app(base | environ, start_response))
    return answer["status"], answer["headers"], payload


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({}, "invalid_request"),  # no length, no end of stream: nothing is read
        ({"wsgi.input_terminated": True}, "invalid_client"),  # chunked: read to the end
        ({"CONTENT_LENGTH": "abc"}, "invalid_request"),
        ({"CONTENT_LENGTH": str(10**9)}, "invalid_request"),  # refused before reading
    ],
)
def test_body_framing(app, environ, error):
    body = b"grant_type=client_credentials&client_id=nobody&client_secret=x"
    status, headers, payload = _wsgi(app, body, **environ)
    assert json.loads(payload)["error"] == error, payload
    assert status.startswith("401 " if error == "invalid_client" else "400 ")
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) == len(payload)


def test_an_unexpected_error_is_a_json_500_and_is_logged(app, client, monkeypatch, caplog):
    def broken(request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.extensions["token_endpoint"], "handle", broken)
    r = post(client, "grant_type=client_credentials")
    assert_oauth_error(r, "server_error", 500)
    assert "a bug" in caplog.text


def test_a_post_that_reaches_flask_gets_the_same_answer(app):
    """The Flask rules for the OAuth paths (kept for the URL map) answer through the front."""
    flask_only = app.extensions["oauth_front"].inner
    body = b"grant_type=client_credentials&client_id=nobody&client_secret=x"
    answers = [_wsgi(wsgi, body, CONTENT_LENGTH=str(len(body))) for wsgi in (app, flask_only)]
    (status, headers, payload), (flask_status, flask_headers, flask_payload) = answers
    assert status[:3] == flask_status[:3] == "401"
    assert json.loads(payload) == json.loads(flask_payload)
    assert headers["WWW-Authenticate"] == flask_headers["WWW-Authenticate"]
    assert flask_headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("count", [33, 40, 1000])
def test_too_many_parameters_are_named_as_such(client, count):
    """Was "not valid UTF-8 form data" (parse_qsl's own limit raised the same ValueError)."""
    r = post(client, "&".join(f"p{i}=1" for i in range(count)))
    assert_oauth_error(r, "invalid_request")
    assert r.json["error_description"] == "The request has more than 32 parameters."


def test_thirty_two_parameters_are_read(client):
    """The limit counts parameters, not separators: empty pieces are not parameters."""
    body = "grant_type=password&client_id=storefront&" + "&".join(f"p{i}=" for i in range(30))
    r = post(client, body + "&&&&")
    assert_oauth_error(r, "invalid_request")
    assert r.json["error_description"] == "Missing 'username' parameter."


@pytest.mark.parametrize(
    ("body", "description"),
    [
        (b"grant_type=password&username=\xff", "The request body is not valid UTF-8."),
        ("grant_type=password&username=%ff", "A parameter is not valid percent-encoded UTF-8."),
    ],
)
def test_encoding_errors_say_which(client, body, description):
    r = post(client, body)
    assert_oauth_error(r, "invalid_request")
    assert r.json["error_description"] == description
