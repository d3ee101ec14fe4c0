"""Request and response models (pydantic v2): one declaration that validates a body and renders
its JSON Schema for the OpenAPI document, so that what is documented is what is enforced.

Validation is strict: unknown fields, wrong types, control characters and out-of-range values
are refused with a message per field (422); a body that is not a JSON object is a 400.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from flask import request
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from ...inputs import InvalidJson, parse_json, text_problem
from .errors import ApiError

# Free text: no control characters, not blank.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
# Identifiers chosen by an admin (legal entities, customers, clients).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# DESIGN section 2: scope names follow `service.resource_action`.
SCOPE_PATTERN = r"^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$"
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"
MAX_MONEY = Decimal("9999999999999.99")


def _clean(value: Any) -> Any:
    if isinstance(value, str) and (problem := text_problem(value)):
        raise PydanticCustomError("text", problem)
    return value


def _money(value: Any) -> Decimal:
    # bool is an int in Python, never in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number", "must be a number")
    amount = Decimal(str(value))
    if not amount.is_finite() or amount < 0 or amount > MAX_MONEY:
        raise PydanticCustomError("number", f"must be between 0 and {MAX_MONEY}")
    if amount != amount.quantize(Decimal("0.01")):
        raise PydanticCustomError("number", "must have at most two decimals")
    return amount


def text(max_length: int = 255, *, min_length: int | None = None, pattern: str | None = None):
    """A string of a body: no control characters and valid Unicode (checked first), then its
    length and `pattern`."""
    constraints = Field(max_length=max_length, min_length=min_length, pattern=pattern)
    return Annotated[str, constraints, BeforeValidator(_clean)]


Text = text()
#: Free text that is not blank.
Name = text(pattern=TEXT_PATTERN)
Email = text(320, pattern=EMAIL_PATTERN)
#: A non-negative amount with at most two decimals, exact when it comes back as a float.
Money = Annotated[
    Decimal,
    BeforeValidator(_money),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": float(MAX_MONEY)}),
]
#: An RFC 3339 date-time as the representations write it (see `representations.iso`).
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Body(BaseModel):
    """A request body: exactly these fields, JSON types only. An optional field declared
    `= None` without `| None` may be left out but not sent as null."""

    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")


class Representation(BaseModel):
    """A response body: every field is always present (null when it has no value)."""

    model_config = ConfigDict(extra="forbid")


class ComponentSchema(GenerateJsonSchema):
    """JSON Schema for the OpenAPI components: the docstring as description, no titles, and no
    `default: null` on a field that may be left out but is never null."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def model_schema(self, schema):
        result = super().model_schema(schema)
        result.pop("title", None)
        return result

    def default_schema(self, schema):
        result = super().default_schema(schema)
        if result.get("default", ...) is None:
            del result["default"]
        return result


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be a boolean",
    "list_type": "must be an array",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "string_pattern_mismatch": "has an invalid format",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "too_long": "must have at most {max_length} items",
    "too_short": "must have at least {min_length} items",
}


def _path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "body"


def _message(error: dict) -> str:
    kind = error["type"]
    if error.get("input", ...) is None and kind != "missing":
        return "must not be null"
    if kind == "too_short" and error["ctx"]["min_length"] == 1:
        return "must not be empty"
    if kind == "literal_error":
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", error["ctx"]["expected"]))
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**error.get("ctx", {}))
    return error["msg"]


def field_errors(exc: ValidationError) -> dict[str, str]:
    """One message per offending field, keyed by its path (`a.b[0]`; `body` for the whole)."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if error["type"] == "extra_forbidden":
            name = str(loc[-1])
            shown = name if text_problem(name) is None and len(name) <= 64 else "(unreadable)"
            loc = (*loc[:-1], shown)
        fields.setdefault(_path(loc), _message(error))
    return fields


def read_json() -> Any:
    """The request body as JSON, or a 400: wrong media type, invalid or ambiguous JSON."""
    if not request.is_json:
        raise ApiError(400, "invalid_request", "The body must be application/json.")
    try:
        return parse_json(request.get_data(cache=False))
    except InvalidJson as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


def validated(body: type[Body]) -> dict:
    """Read the request's JSON and check it against `body`: 400 if unreadable, else 422 with
    one message per offending field. Returns only the fields given."""
    try:
        return body.model_validate(read_json()).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ApiError(
            422, "validation_failed", "The request body is invalid.", fields=field_errors(exc)
        ) from None
