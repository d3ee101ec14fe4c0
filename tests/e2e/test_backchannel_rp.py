"""Back-channel logout as served (`token-service serve`, both backends): a customer revokes
their refresh token, and the relying party's endpoint receives the logout token from the
server's own delivery thread, after the request that ended the session. The RP verifies it
with joserfc against the served /jwks.json."""

from __future__ import annotations

import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import create_engine, text
from test_backchannel_logout import EVENT, RelyingParty

PASSWORD = "correct horse battery staple"


def test_a_revoked_session_reaches_the_relying_party(server):
    rp = RelyingParty()
    engine = create_engine(server.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE clients SET backchannel_logout_uri = :uri WHERE client_id = :id"),
                {"uri": rp.uri, "id": "storefront"},
            )
        login = requests.post(
            f"{server.issuer}/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "storefront",
                "username": "bob@acme.test",
                "password": PASSWORD,
            },
            timeout=10,
        ).json()
        revoked = requests.post(
            f"{server.issuer}/oauth/revoke",
            data={"token": login["refresh_token"], "client_id": "storefront"},
            timeout=10,
        )
        assert revoked.status_code == 200
        [received] = rp.wait_for(1, timeout=15)
        assert received["content_type"] == "application/x-www-form-urlencoded"
        keys = KeySet.import_key_set(requests.get(f"{server.issuer}/jwks.json", timeout=10).json())
        token = jwt.decode(received["form"]["logout_token"][0], keys)
        assert token.header["typ"] == "logout+jwt"
        access = jwt.decode(login["access_token"], keys).claims
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": server.issuer},
            aud={"essential": True, "value": "storefront"},
            sub={"essential": True, "value": access["sub"]},
            sid={"essential": True, "value": access["sid"]},
            exp={"essential": True},
            jti={"essential": True},
        ).validate(token.claims)
        assert token.claims["events"] == {EVENT: {}} and "nonce" not in token.claims
        with engine.begin() as conn:
            sent = conn.execute(text("SELECT sent_at, attempts FROM backchannel_logouts")).all()
        assert len(sent) == 1 and sent[0].attempts == 1
    finally:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE clients SET backchannel_logout_uri = NULL WHERE client_id = :id"),
                {"id": "storefront"},
            )
        engine.dispose()
        rp.close()
