"""Helpers for driving the hosted pages with Flask's test client: a tiny browser that reads
forms by their labels and field names, as a person (or the hidden check) would."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

from token_service.clients import forget_client
from token_service.demo import DEMO_PASSWORD
from token_service.extensions import db
from token_service.services.clients import create_client

REDIRECT_URI = "http://127.0.0.1:9999/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Form(HTMLParser):
    """The first form of a page: its action and its fields' values."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.action = None
        self.fields: dict[str, str] = {}
        self.radios: list[str] = []
        self.labels: list[str] = []
        self.buttons: list[str] = []
        self._in_label = self._in_button = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attrs.get("action")
        elif tag == "input" and attrs.get("name"):
            if attrs.get("type") == "radio":
                self.radios.append(attrs["value"])
                if "checked" in attrs:
                    self.fields[attrs["name"]] = attrs["value"]
            else:
                self.fields[attrs["name"]] = attrs.get("value") or ""
        elif tag == "label":
            self._in_label = True
        elif tag == "button":
            self._in_button = True

    def handle_endtag(self, tag):
        self._in_label = self._in_label and tag != "label"
        self._in_button = self._in_button and tag != "button"

    def handle_data(self, data):
        if self._in_label and data.strip():
            self.labels.append(data.strip())
        if self._in_button and data.strip():
            self.buttons.append(data.strip())


def authorize_params(client_id="web-shop", **extra) -> dict:
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile order.order_read_le",
        "state": "st-" + secrets.token_hex(4),
        "nonce": "n-" + secrets.token_hex(4),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    params["_verifier"] = verifier
    return params


class Browser:
    """The test client as a browser on the hosted pages."""

    def __init__(self, client) -> None:
        self.client = client

    def authorize(self, params: dict):
        query = {k: v for k, v in params.items() if not k.startswith("_")}
        return self.client.get("/oauth/authorize?" + urlencode(query))

    def submit(self, page, **fields):
        form = Form(page.get_data(as_text=True))
        data = {**form.fields, **fields}
        return self.client.post(form.action, data=data)

    def sign_in(self, page, email="alice@acme.test", password=DEMO_PASSWORD):
        return self.submit(page, email=email, password=password)


def callback(response) -> dict:
    """The query of a redirect to the client's callback."""
    assert response.status_code in (302, 303), response.get_data(as_text=True)[:500]
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def text(response) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def register(app, client_id="web-shop", *, first_party=True, confidential=False):
    """A code-flow client with the test redirect URI; returns its secret (if confidential)."""
    with app.app_context():
        _, secret = create_client(
            client_id,
            name="Web shop",
            confidential=confidential,
            grant_types=["authorization_code", "refresh_token"],
            scope="openid email profile order.order_read_le",
            first_party=first_party,
            redirect_uris=[REDIRECT_URI],
            post_logout_redirect_uris=["http://127.0.0.1:9999/bye"],
        )
        db.session.commit()
        forget_client()
    return secret
