"""/admin/signing-keys: the keys that sign access tokens (list, rotate)."""

from __future__ import annotations

import json

from flask import current_app

from . import representations as rep
from .routing import operation, record, respond

TAG = "Signing keys"


def key_states(keyring) -> list[tuple[object, str]]:
    """Every key with its state: the newest signs, older ones stay published until every
    token they signed has expired, then they are retired (and may be pruned)."""
    published = {k["kid"] for k in json.loads(keyring.jwks_json())["keys"]}
    states = []
    for i, key in enumerate(keyring.all_keys()):
        state = "signing" if i == 0 else ("published" if key.kid in published else "retired")
        states.append((key, state))
    return states


@operation(
    "GET",
    "/signing-keys",
    summary="List signing keys",
    tag=TAG,
    responses={200: rep.page_of(rep.SigningKey)},
)
def list_signing_keys():
    """Newest (signing) first. Never more than a handful, so not paginated."""
    keyring = current_app.extensions["keyring"]
    items = [rep.signing_key(key, state) for key, state in key_states(keyring)]
    return respond({"items": items, "next_cursor": None})


@operation(
    "POST",
    "/signing-keys/rotate",
    summary="Rotate the signing key",
    tag=TAG,
    responses={201: rep.SigningKey},
)
def rotate_signing_key():
    """A new key (TOKEN_SERVICE_SIGNING_ALG) signs from now on; the previous one stays in the
    JWKS until every token it signed has expired."""
    keyring = current_app.extensions["keyring"]
    previous = keyring.all_keys()
    key = keyring.generate(current_app.config["SETTINGS"].signing_alg)
    record(
        "signing_key.rotated",
        target=key.kid,
        alg=key.alg,
        previous=previous[0].kid if previous else None,
    )
    return respond(rep.signing_key(key, "signing"), 201)
