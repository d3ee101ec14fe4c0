"""Public, unauthenticated routes: discovery (RFC 8414), the JWKS, health and readiness."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from ..extensions import db
from ..keys import NoSigningKey
from ..models import Scope
from .schemas import Health, Readiness, ServerMetadata

log = logging.getLogger(__name__)

bp = Blueprint("public", __name__)


def _metadata() -> dict:
    """RFC 8414 metadata, and OpenID Connect Discovery 1.0 §3 metadata in the same document."""
    issuer = current_app.config["SETTINGS"].issuer
    settings = current_app.config["SETTINGS"]
    alg = current_app.extensions["keyring"].current.alg
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    return ServerMetadata(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/oauth/authorize",
        token_endpoint=f"{issuer}/oauth/token",
        userinfo_endpoint=f"{issuer}/oauth/userinfo",
        end_session_endpoint=f"{issuer}/oauth/logout",
        jwks_uri=f"{issuer}/jwks.json",
        introspection_endpoint=f"{issuer}/oauth/introspect",
        revocation_endpoint=f"{issuer}/oauth/revoke",
        registration_endpoint=f"{issuer}/oauth/register",
        grant_types_supported=[
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "password",
        ],
        response_types_supported=["code"],
        response_modes_supported=["query"],
        code_challenge_methods_supported=["S256"],
        authorization_response_iss_parameter_supported=True,
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=[alg],
        prompt_values_supported=["none", "login", "consent", "select_account"],
        claims_supported=[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "sid",
            "azp",
            "at_hash",
            "legal_entity_id",
            "email",
            "email_verified",
            "name",
        ],
        token_endpoint_auth_methods_supported=auth_methods,
        introspection_endpoint_auth_methods_supported=auth_methods[:2],
        revocation_endpoint_auth_methods_supported=auth_methods,
        scopes_supported=sorted(db.session.scalars(db.select(Scope.name))),
        access_token_signing_alg_values_supported=[alg],
        service_documentation=f"{issuer}/openapi.json",
        legal_entity_switching_supported=True,
        refresh_token_rotation_grace_seconds=settings.refresh_grace_seconds,
        backchannel_logout_supported=True,
        backchannel_logout_session_supported=True,  # every logout token carries `sid`
    ).model_dump()


@bp.get("/.well-known/oauth-authorization-server")
@bp.get("/.well-known/openid-configuration")
def discovery():
    response = jsonify(_metadata())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/jwks.json")
def jwks():
    body = current_app.extensions["keyring"].jwks_json()
    # Short cache: verifiers refetch on an unknown kid anyway; a rotation shows within a minute.
    return Response(
        body,
        mimetype="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=60"},
    )


def _signing_key_check() -> str:
    try:
        current_app.extensions["keyring"].current  # noqa: B018 - loads, or raises
    except NoSigningKey:
        return "missing"
    except Exception as exc:  # a key file that cannot be read or parsed
        log.error("signing key unusable: %s: %s", exc.__class__.__name__, exc)
        return "unusable"
    return "ok"


@bp.get("/healthz")
def healthz():
    """The process is up (liveness)."""
    return Health(status="ok").model_dump()


@bp.get("/readyz")
def readyz():
    """The database and the store answer, and a signing key can sign (readiness): without
    one every token request would answer 503."""
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        db.session.rollback()
        checks["database"] = "unavailable"
    checks["store"] = "ok" if current_app.extensions["token_store"].ping() else "unavailable"
    checks["signing_key"] = _signing_key_check()
    ready = all(v == "ok" for v in checks.values())
    answer = Readiness(status="ok" if ready else "unavailable", checks=checks)
    return jsonify(answer.model_dump()), 200 if ready else 503
