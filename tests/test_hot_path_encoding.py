"""The hot paths' own encodings stay what the rest of the service reads: SQLite times as
SQLAlchemy stores them, grace responses sealed by an earlier release still open."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.dialects import sqlite

from token_service.oauth2 import grace
from token_service.oauth2.sessions.sqlite import _from_sqlite, _to_sqlite


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 2, 21, 17, 11, 0, tzinfo=UTC),  # a whole second: no fraction to drop
        datetime(2026, 12, 2, 21, 17, 11, 50006, tzinfo=UTC),
        datetime(1999, 1, 1, 0, 0, 0, 999999, tzinfo=UTC),
    ],
)
def test_sqlite_times_are_sqlalchemys_storage_format(moment):
    dialect = sqlite.dialect()
    stored_by_orm = sqlite.DATETIME().bind_processor(dialect)(moment.replace(tzinfo=None))
    assert _to_sqlite(moment) == stored_by_orm
    assert _from_sqlite(_to_sqlite(moment)) == moment


def test_a_grace_response_sealed_with_the_standard_json_encoder_still_opens():
    """Sealed before the switch to orjson (spaces, ASCII escapes), opened after it."""
    token, params = "presented-refresh-token", grace.fingerprint("storefront", "acme", None)
    response = {"access_token": "eyJ...", "legal_entities": [{"id": "acme", "name": "Ünïcode"}]}
    nonce = os.urandom(12)
    plaintext = json.dumps({"params": params, "response": response}).encode()
    blob = nonce + AESGCM(grace._key(token)).encrypt(nonce, plaintext, b"grace")
    assert grace.open_sealed(token, blob) == (params, response)
    assert grace.open_sealed("another-token", blob) is None
    assert grace.open_sealed(token, grace.seal(token, params, response)) == (params, response)
