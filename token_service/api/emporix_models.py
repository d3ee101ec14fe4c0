"""The bodies of the Emporix-compatible layer (api/emporix.py), as pydantic models written from
Emporix's published OpenAPI (customer-management and IAM): the requests are validated with them,
the answers are built through them, and they are the layer's schemas in /openapi.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from ..inputs import text_problem
from ..oauth2.request import DEFAULT_MAX_LENGTH, MAX_PARAM_LENGTH

TENANT_SCHEMA = {"type": "string", "pattern": "^[a-z][a-z0-9]+$", "minLength": 3, "maxLength": 16}
MAX_ID_LENGTH = 64


def _no_nul(value: str) -> str:
    if problem := text_problem(value):
        raise PydanticCustomError("nul", problem)
    return value


def bounded(limit_name: str, *, min_length: int = 1):
    """A string bounded as the token endpoint bounds its parameter `limit_name`, without
    control characters (inputs.text_problem)."""
    limit = MAX_PARAM_LENGTH.get(limit_name, DEFAULT_MAX_LENGTH)
    return Annotated[str, Field(min_length=min_length, max_length=limit), AfterValidator(_no_nul)]


#: Checked against the deployment's tenant (404 otherwise), documented as Emporix's pattern.
Tenant = Annotated[str, WithJsonSchema(TENANT_SCHEMA)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_no_nul)]


class Request(BaseModel):
    """A query or a JSON body: JSON types exactly; members Emporix defines and we do not use
    are ignored."""

    model_config = ConfigDict(strict=True)


class Answer(BaseModel):
    """An answer: exactly these members."""

    model_config = ConfigDict(extra="forbid")


# -- queries ----------------------------------------------------------------------------------


class AnonymousLoginQuery(Request):
    tenant: Tenant
    client_id: bounded("client_id")


class AnonymousRefreshQuery(AnonymousLoginQuery):
    refresh_token: bounded("refresh_token")


class RefreshAuthTokenQuery(Request):
    # Emporix's parameter and member names are camelCase: they are the contract.
    refreshToken: bounded("refresh_token")
    legalEntityId: bounded("legal_entity_id") = None


class LogoutQuery(Request):
    accessToken: bounded("token")


# -- bodies -----------------------------------------------------------------------------------


class EmporixPasswordAuthentication(Request):
    """A customer's credentials."""

    email: bounded("username")
    password: bounded("password")


class EmporixAssignmentCreate(Request):
    """A customer to add to a group."""

    userId: Id
    userType: Literal["CUSTOMER"] = "CUSTOMER"


# -- answers ----------------------------------------------------------------------------------


class EmporixAnonymousToken(Answer):
    """An anonymous token: a storefront visit's session, no customer."""

    token_type: Literal["Bearer"]
    access_token: Annotated[str, Field(description="A JWT of type anon+jwt, for this layer only.")]
    expires_in: int
    refresh_token: str
    refresh_token_expires_in: int
    sessionId: str
    scope: Annotated[str, Field(description="`tenant=<name>`.")]


class EmporixRefreshCustomerToken(Answer):
    """A customer's tokens after a refresh."""

    access_token: Annotated[str, Field(description="An RFC 9068 JWT access token.")]
    expires_in: int
    refresh_token: str
    refresh_token_expires_in: int
    token_type: Literal["Bearer"]
    session_id: str


class EmporixCustomerToken(EmporixRefreshCustomerToken):
    """A customer's tokens after a login."""

    saas_token: Annotated[str, Field(description="The same access token (no separate one).")]
    initialPassword: Annotated[
        Literal["false"],
        Field(description="Whether an employee set the password: always `false` here."),
    ]


class EmporixValidateTokenResponse(Answer):
    """A live customer access token's details."""

    token_type: Literal["Bearer"]
    expires_in: int
    scope: Annotated[str, Field(description="The token's scopes and `tenant=<name>`.")]
    sessionId: str
    email: str | None
    legalEntityId: Annotated[str, Field(description="Absent if the token acts for no entity.")] = (
        None
    )


class EmporixAccount(Answer):
    """A login."""

    id: Annotated[str, Field(description="The email.")]


class EmporixLegalEntity(Answer):
    """A legal entity."""

    id: str
    name: str


class EmporixB2b(Answer):
    """The customer's legal entities."""

    legalEntities: list[EmporixLegalEntity]


class EmporixCustomer(Answer):
    """The customer's profile fields this service holds (a visitor's: anonymous)."""

    id: str
    customerNumber: str
    firstName: str = None
    lastName: str = None
    contactEmail: str = None
    accounts: list[EmporixAccount]
    businessModel: Literal["B2B", "B2C"] = None
    b2b: EmporixB2b = None


class EmporixFaultDetail(BaseModel):
    errorcode: str


class EmporixFault(BaseModel):
    """What Emporix's gateway answers a 401 with."""

    faultstring: str
    detail: EmporixFaultDetail


Status = Annotated[int, Field(ge=400, le=599)]


class EmporixError(BaseModel):
    """Emporix customer-management's error."""

    status: Status
    type: Annotated[str, Field(pattern="^[a-z][a-z_]*[a-z]$")]
    message: str
    fault: EmporixFault = None


class EmporixIamError(BaseModel):
    """Emporix IAM's error."""

    code: Status
    status: str
    message: str
    details: list[str]
    fault: EmporixFault = None


class EmporixGroupB2b(Answer):
    """The group's legal entity."""

    legalEntityId: str


class EmporixGroupMetadata(Answer):
    """Versioning."""

    version: int
    createdAt: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    modifiedAt: Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class EmporixGroup(Answer):
    """One of the token's legal entity's groups."""

    id: str
    name: dict[str, str]
    code: Literal["ADMIN", "BUYER", "REQUESTER", "CONTACT", "CUSTOM"]
    userType: Literal["CUSTOMER"]
    b2b: EmporixGroupB2b
    metadata: EmporixGroupMetadata


class EmporixAssignment(Answer):
    """A member of a group."""

    id: Annotated[str, Field(description="`<groupId>:<userId>`.")]
    groupId: str
    userId: str
    userType: Literal["CUSTOMER"]


class EmporixAssignmentId(Answer):
    """The membership."""

    id: str


def dump(answer: BaseModel) -> dict[str, Any]:
    """An answer's JSON members: the optional ones only when set."""
    return answer.model_dump(exclude_unset=True)
