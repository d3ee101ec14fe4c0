"""/admin/initial-access-tokens: what opens the registration endpoint (RFC 7591 §3)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ... import registration_tokens
from .representations import InitialAccessToken, iso
from .routing import operation, principal, record, respond
from .schema import Body

TAG = "Clients"


class InitialAccessTokenCreate(Body):
    expires_in: Annotated[
        int,
        Field(ge=1, le=registration_tokens.MAX_EXPIRES_IN, description="Seconds it is valid."),
    ] = registration_tokens.DEFAULT_EXPIRES_IN
    uses: Annotated[
        int,
        Field(ge=1, le=registration_tokens.MAX_USES, description="How many registrations."),
    ] = 1


@operation(
    "POST",
    "/initial-access-tokens",
    summary="Create an initial access token",
    tag=TAG,
    body=InitialAccessTokenCreate,
    responses={201: InitialAccessToken},
)
def create_initial_access_token(body: dict):
    """A bearer token for POST /oauth/register (RFC 7591 §3), valid `expires_in` seconds for
    `uses` registrations. Shown in this response only: it is stored as a hash."""
    row, token = registration_tokens.create(
        body.get("expires_in", registration_tokens.DEFAULT_EXPIRES_IN),
        body.get("uses", 1),
        created_by=principal().client_id,
    )
    record("initial_access_token.created", target=row.id, uses=row.uses_left)
    answer = InitialAccessToken(
        id=row.id, token=token, expires_at=iso(row.expires_at), uses_left=row.uses_left
    )
    return respond(answer.model_dump(), 201)
