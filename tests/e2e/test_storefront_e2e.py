"""The acceptance check, end to end: the README's commands, then the storefront flow against the
service under `token-service serve`, driven through the discovery document by OAuth and JOSE
libraries this project did not write, in two languages (Python: Authlib + PyJWT; Node: oauth4webapi
+ jose). Log in as alice, switch between her companies, compare the scopes with the demo data,
verify the tokens offline; then a refresh race across worker processes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from token_service.config import DEFAULT_BASELINE, DEFAULT_GROUP_TEMPLATES
from token_service.demo import DEMO_PASSWORD
from token_service.models import RefreshToken

NODE_DIR = Path(__file__).parent / "node"
AUDIENCE = "commerce-api"
ACCESS_TOKEN_TTL = 300
ALICE, BOB = "alice@acme.test", "bob@acme.test"


def expected_scope(*groups: str) -> str:
    """What the demo data gives: baseline + the bundles of the groups held in the entity."""
    names = set(DEFAULT_BASELINE.split())
    for group in groups:
        names |= set(DEFAULT_GROUP_TEMPLATES[group].split())
    return " ".join(sorted(names))


ALICE_AT_ACME = expected_scope("ADMIN")
ALICE_AT_GLOBEX = expected_scope("CONTACT")
BOB_AT_ACME = expected_scope("BUYER")
ALICE_ENTITIES = [{"id": "acme", "name": "ACME Corp"}, {"id": "globex", "name": "Globex"}]
BOB_ENTITIES = [{"id": "acme", "name": "ACME Corp"}]


def test_expected_scopes_differ():
    """The comparisons below mean something: the three expectations are distinct."""
    assert len({ALICE_AT_ACME, ALICE_AT_GLOBEX, BOB_AT_ACME}) == 3
    assert "order.order_read_le" in ALICE_AT_ACME.split()
    assert "order.order_read_le" not in ALICE_AT_GLOBEX.split() + BOB_AT_ACME.split()


# --- discovery -----------------------------------------------------------------------------


def discover(server) -> dict:
    response = requests.get(f"{server.issuer}/.well-known/oauth-authorization-server", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


# Every field passes Authlib's RFC 8414 validation, and its OpenID Connect Discovery one.
AUTHLIB_METADATA_EXCEPTIONS: set[str] = set()


def test_discovery_document(server, monkeypatch):
    meta = discover(server)
    assert meta["issuer"] == server.issuer
    for endpoint in ("token_endpoint", "jwks_uri", "introspection_endpoint", "revocation_endpoint"):
        assert meta[endpoint].startswith(server.issuer + "/"), endpoint
    assert {"password", "refresh_token"} <= set(meta["grant_types_supported"])
    assert "none" in meta["token_endpoint_auth_methods_supported"]
    assert set(ALICE_AT_ACME.split()) <= set(meta["scopes_supported"])
    # The OIDC-style path serves the same document.
    oidc = requests.get(f"{server.issuer}/.well-known/openid-configuration", timeout=10).json()
    assert oidc == meta
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # http://127.0.0.1 in the test
    metadata = AuthorizationServerMetadata(meta)
    for key in metadata.REGISTRY_KEYS:
        if key not in AUTHLIB_METADATA_EXCEPTIONS:
            getattr(metadata, f"validate_{key}")()
    OpenIDProviderMetadata(meta).validate()


# --- Python: Authlib (OAuth 2 client) + PyJWT (offline verification) -----------------------


class Verifier:
    """Offline verification of RFC 9068 access tokens with PyJWT, keys from the jwks_uri."""

    def __init__(self, meta: dict) -> None:
        self.issuer = meta["issuer"]
        self.jwks = jwt.PyJWKClient(meta["jwks_uri"])

    def __call__(self, access_token: str) -> dict:
        header = jwt.get_unverified_header(access_token)
        assert header["typ"] == "at+jwt"
        assert header["alg"] == "RS256"
        key = self.jwks.get_signing_key_from_jwt(access_token)
        return jwt.decode(
            access_token,
            key.key,
            algorithms=["RS256"],
            audience=AUDIENCE,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )


def check_customer_token(token, claims, *, scope, entity, entities) -> None:
    """The token response and its access token's claims agree with each other and the demo."""
    assert token["token_type"].lower() == "bearer"
    assert token["expires_in"] == ACCESS_TOKEN_TTL
    assert token["refresh_token"]
    assert token["refresh_token_expires_in"] > 0
    assert token["scope"] == scope
    assert token["legal_entity_id"] == entity
    assert token["legal_entities"] == entities
    assert claims["scope"] == scope
    assert claims["legal_entity_id"] == entity
    assert claims["client_id"] == "storefront"
    assert claims["exp"] - claims["iat"] == ACCESS_TOKEN_TTL
    assert claims["sid"] and claims["auth_time"] <= claims["iat"]


def test_storefront_flow_python(server):
    meta = discover(server)
    token_endpoint = meta["token_endpoint"]
    verify = Verifier(meta)
    statuses: list[int] = []

    storefront = OAuth2Session(client_id="storefront", token_endpoint_auth_method="none")
    storefront.hooks["response"].append(lambda response, **_: statuses.append(response.status_code))
    with storefront:
        # Log in as alice: her default entity, ACME, where she is an ADMIN.
        token = storefront.fetch_token(
            token_endpoint, grant_type="password", username=ALICE, password=DEMO_PASSWORD
        )
        claims = verify(token["access_token"])
        check_customer_token(
            token, claims, scope=ALICE_AT_ACME, entity="acme", entities=ALICE_ENTITIES
        )
        sub, sid = claims["sub"], claims["sid"]

        # Switch to Globex (a CONTACT there) and back: refreshes, no new login.
        for entity, scope in (("globex", ALICE_AT_GLOBEX), ("acme", ALICE_AT_ACME)):
            previous = token["refresh_token"]
            token = storefront.refresh_token(
                token_endpoint, refresh_token=previous, legal_entity_id=entity
            )
            claims = verify(token["access_token"])
            check_customer_token(token, claims, scope=scope, entity=entity, entities=ALICE_ENTITIES)
            assert (claims["sub"], claims["sid"]) == (sub, sid), "same customer, same session"
            assert token["refresh_token"] != previous, "rotated"

        # A subsidiary she is not assigned to: 400 invalid_grant, and nothing is lost.
        current = token["refresh_token"]
        with pytest.raises(OAuthError) as refused:
            storefront.refresh_token(
                token_endpoint, refresh_token=current, legal_entity_id="acme-logistics"
            )
        assert refused.value.error == "invalid_grant"
        assert statuses[-1] == 400
        token = storefront.refresh_token(token_endpoint, refresh_token=current)
        claims = verify(token["access_token"])
        check_customer_token(
            token, claims, scope=ALICE_AT_ACME, entity="acme", entities=ALICE_ENTITIES
        )

        # bob: ACME's BUYER group.
        with OAuth2Session(client_id="storefront", token_endpoint_auth_method="none") as bobs:
            bob = bobs.fetch_token(
                token_endpoint, grant_type="password", username=BOB, password=DEMO_PASSWORD
            )
        bob_claims = verify(bob["access_token"])
        check_customer_token(
            bob, bob_claims, scope=BOB_AT_ACME, entity="acme", entities=BOB_ENTITIES
        )
        assert bob_claims["sub"] != sub

        # Introspection by the order service (client_secret_basic with its printed secret).
        order_service = OAuth2Session(
            client_id="order-service",
            client_secret=server.secrets["order-service"],
            token_endpoint_auth_method="client_secret_basic",
            revocation_endpoint_auth_method="client_secret_basic",
        )
        with order_service:

            def introspect(value: str, hint: str) -> dict:
                response = order_service.introspect_token(
                    meta["introspection_endpoint"], token=value, token_type_hint=hint
                )
                assert response.status_code == 200
                assert response.headers["Cache-Control"] == "no-store"
                return response.json()

            active = introspect(token["access_token"], "access_token")
            assert active["active"] is True
            assert active["sub"] == sub and active["sid"] == sid
            assert active["scope"] == ALICE_AT_ACME
            assert active["legal_entity_id"] == "acme"
            assert active["client_id"] == "storefront"
            assert active["iss"] == server.issuer
            # A refresh token is for its own client only (docs/resource-servers.md): the
            # order service is told nothing about the storefront's.
            assert introspect(token["refresh_token"], "refresh_token") == {"active": False}

            # The storefront revokes its refresh token (RFC 7009, public client): the session
            # ends, and its access token stops introspecting as active at once.
            revoked = storefront.revoke_token(
                meta["revocation_endpoint"],
                token=token["refresh_token"],
                token_type_hint="refresh_token",
            )
            assert revoked.status_code == 200
            assert introspect(token["refresh_token"], "refresh_token") == {"active": False}
            assert introspect(token["access_token"], "access_token") == {"active": False}

        with pytest.raises(OAuthError) as after_revoke:
            storefront.refresh_token(token_endpoint, refresh_token=token["refresh_token"])
        assert after_revoke.value.error == "invalid_grant"


# --- Node: oauth4webapi (OAuth 2 client) + jose (offline verification) ---------------------


def _node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "Node.js is required for the cross-language e2e test (node and npm on PATH, "
            "Node >= 20); install it, it is not optional."
        )
    return node, npm


def _npm_ci(npm: str) -> None:
    """Install the locked oauth4webapi and jose once (node_modules/ is git-ignored)."""
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    # Test workers run in parallel (pytest-xdist): one installs, the others wait for it.
    with open(NODE_DIR / ".npm-ci.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
            return
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    if done.returncode != 0:
        pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def test_storefront_flow_node(server):
    node, npm = _node_tools()
    _npm_ci(npm)
    done = subprocess.run(
        [node, "storefront.mjs", server.issuer],
        cwd=NODE_DIR,
        env={**os.environ, "ORDER_SERVICE_SECRET": server.secrets["order-service"]},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"node storefront.mjs failed:\n{done.stdout}\n{done.stderr}"
    seen = json.loads(done.stdout)

    assert seen["issuer"] == server.issuer
    assert seen["discovery"]["token_endpoint"] == f"{server.issuer}/oauth/token"
    expected = [
        ("alice login", ALICE_AT_ACME, "acme", ALICE_ENTITIES),
        ("alice switch to globex", ALICE_AT_GLOBEX, "globex", ALICE_ENTITIES),
        ("alice switch back to acme", ALICE_AT_ACME, "acme", ALICE_ENTITIES),
        ("alice refresh after refused switch", ALICE_AT_ACME, "acme", ALICE_ENTITIES),
        ("bob login", BOB_AT_ACME, "acme", BOB_ENTITIES),
    ]
    assert [s["step"] for s in seen["steps"]] == [e[0] for e in expected]
    for step, (name, scope, entity, entities) in zip(seen["steps"], expected, strict=True):
        assert step["scope"] == scope, name
        assert step["legal_entity_id"] == entity, name
        assert step["legal_entities"] == entities, name
        assert step["header"]["typ"] == "at+jwt", name
        assert step["header"]["alg"] == "RS256", name
        claims = step["claims"]
        assert claims["scope"] == scope, name
        assert claims["legal_entity_id"] == entity, name
        assert claims["iss"] == server.issuer and claims["aud"] == AUDIENCE, name
        assert claims["client_id"] == "storefront", name
    alice_sessions = {s["claims"]["sid"] for s in seen["steps"][:4]}
    assert len(alice_sessions) == 1, "switching companies keeps the session"
    assert seen["refused_switch"] == {"status": 400, "error": "invalid_grant"}

    introspection = seen["introspection"]
    assert introspection["before"]["access_token"]["active"] is True
    assert introspection["before"]["access_token"]["sid"] in alice_sessions
    # A refresh token is introspected only for the client holding it: to the order service it
    # is as unknown as any other string.
    assert introspection["before"]["refresh_token"] == {"active": False}
    for kind in ("access_token", "refresh_token"):
        assert introspection["revoked"][kind] == {"active": False}, kind
    assert seen["refresh_after_revoke"] == {"status": 400, "error": "invalid_grant"}


# --- a refresh race across worker processes -------------------------------------------------

RACERS = 8


def _login(server) -> dict:
    response = requests.post(
        f"{server.issuer}/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "storefront",
            "username": ALICE,
            "password": DEMO_PASSWORD,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


#: Pids of the workers that answered racing requests, per backend: kept here, not on the
#: module's server, which xdist may tear down and start again between two of its tests.
RACE_PIDS: dict[str, list[int]] = {}


def _race(server, params: list[dict], tag: str) -> list[requests.Response]:
    """POST every form at once from its own thread, each on its own connection; the tag, in
    each request's id, goes to the service's log line, which says which worker answered."""
    barrier = threading.Barrier(len(params))
    results: list[requests.Response | BaseException | None] = [None] * len(params)

    def run(i: int) -> None:
        try:
            with requests.Session() as session:
                barrier.wait(timeout=10)
                results[i] = session.post(
                    f"{server.issuer}/oauth/token",
                    data=params[i],
                    headers={"X-Request-Id": f"{tag}-{i:04d}"},
                    timeout=30,
                )
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(params))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        if not isinstance(result, requests.Response):
            raise AssertionError(f"a racer did not get an answer: {result!r}")
    return results


def _tokens_in_session(server, sid: str) -> int:
    """Refresh tokens of one session, read straight from the service's database."""
    url = server.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return session.scalar(
                select(func.count()).select_from(RefreshToken).where(RefreshToken.session_id == sid)
            )
    finally:
        engine.dispose()


def _successor_refreshes(server, successor: str) -> None:
    response = requests.post(
        f"{server.issuer}/oauth/token",
        data={"grant_type": "refresh_token", "client_id": "storefront", "refresh_token": successor},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] in (ALICE_AT_ACME, ALICE_AT_GLOBEX)


@pytest.mark.parametrize("entities", [False, True], ids=["same-params", "acme-globex"])
def test_concurrent_refreshes_across_workers(server, entities):
    """Of concurrent refreshes with one token, exactly one rotates it; the same request again
    (a retry, a second tab) gets the same successor; the session survives. With one worker
    (embedded) SQLite's write lock serialises the racers; with PostgreSQL + Redis it is a real
    race between worker processes sharing only the database and the store."""
    login = _login(server)
    sid = jwt.decode(login["access_token"], options={"verify_signature": False})["sid"]
    token = login["refresh_token"]
    tag = uuid.uuid4().hex
    params = [
        {
            "grant_type": "refresh_token",
            "client_id": "storefront",
            "refresh_token": token,
            **({"legal_entity_id": ["acme", "globex"][i % 2]} if entities else {}),
        }
        for i in range(RACERS)
    ]
    results = _race(server, params, tag)

    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 400}, statuses
    for r in results:
        assert r.headers["Cache-Control"] == "no-store"
        if r.status_code == 400:
            assert r.json()["error"] == "invalid_grant", r.json()
    winners = [r.json() for r in results if r.status_code == 200]
    assert winners, statuses
    assert len({w["refresh_token"] for w in winners}) == 1, "every 200 carries the one successor"
    assert len({w["access_token"] for w in winners}) == 1, "a replay gets the same answer"
    if not entities:
        assert statuses == [200] * RACERS, "the same request again must not log the buyer out"
    else:
        # The winner's entity decides; requests for the other entity may be refused.
        assert len({w["legal_entity_id"] for w in winners}) == 1
    assert _tokens_in_session(server, sid) == 2, "the login's token and exactly one successor"
    _successor_refreshes(server, winners[0]["refresh_token"])

    served_by = server.served_by(tag, count=RACERS)
    assert len(served_by) == RACERS, served_by
    RACE_PIDS.setdefault(server.backend, []).extend(served_by)


def test_concurrent_refreshes_reached_several_workers(server):
    """The races above were between processes: on the multi-worker backend, more than one
    worker answered racing requests (from the request log: its pid per request)."""
    if server.workers == 1:
        return  # the embedded default runs one worker: nothing to show
    pids = RACE_PIDS.get(server.backend)
    assert pids, "run with test_concurrent_refreshes_across_workers"
    assert len(set(pids)) > 1, f"one worker answered every racer: {pids}"


def test_code_flow_openid_client_node(server):
    """Node's openid-client: discovery, PKCE, the hosted pages found by their labels, the code
    exchange (its own id_token validation), UserInfo, a company switch, logout; the ID tokens
    that refreshes answer (OpenID Connect Core §12.2), validated by openid-client and by
    oauth4webapi's processRefreshTokenResponse, their signatures checked against the JWKS."""
    node, npm = _node_tools()
    _npm_ci(npm)
    done = subprocess.run(
        [node, "codeflow.mjs", server.issuer, ALICE, DEMO_PASSWORD, "Globex"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"node codeflow.mjs failed:\n{done.stdout}\n{done.stderr}"
    seen = json.loads(done.stdout)
    assert seen["pages"] == ["login", "picker"]
    assert seen["callback_origin"] == f"{server.issuer}/demo"
    assert seen["id_token"]["sub"] == "cus_alice" and seen["id_token"]["nonce_ok"]
    assert seen["id_token"]["legal_entity_id"] == seen["legal_entity_id"] == "globex"
    assert seen["id_token"]["email"] == ALICE
    assert seen["userinfo"]["sub"] == "cus_alice"
    # The session keeps the ceiling it asked for: at ACME alice holds order.order_read_le.
    assert seen["switched"] == {"legal_entity_id": "acme", "scope": "order.order_read_le"}
    # The refreshes' ID tokens: the same authentication, the company now acted for, no nonce.
    same = ["iss", "sub", "aud", "azp", "auth_time", "sid", "email"]
    refreshed = {"same": same, "newer_iat": True, "nonce": None, "at_hash_ok": True}
    assert seen["switched_id_token"] == {**refreshed, "legal_entity_id": "acme"}
    assert seen["back"] == {
        "legal_entity_id": "globex",
        "id_token": {**refreshed, "legal_entity_id": "globex"},
    }
    assert seen["logout"] == {"status": 303, "location": f"{server.issuer}/demo?state=bye"}
    assert seen["refresh_after_logout"] == "invalid_grant"
