"""Request bodies: one declaration per body that both validates it and renders its JSON Schema
for the OpenAPI document, so that what is documented is what is enforced.

Validation is strict: unknown fields, wrong types, control characters and out-of-range values
are refused with a message per field (422); a body that is not a JSON object is a 400.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from flask import request

from .errors import ApiError

# Free text: no control characters, not blank.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
# Identifiers chosen by an admin (legal entities, customers, clients).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# DESIGN section 2: scope names follow `service.resource_action`.
SCOPE_PATTERN = r"^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$"
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_text(value: str) -> str | None:
    """Why a string is unacceptable anywhere (path, query or body), or None if it is fine."""
    if _CONTROL.search(value):
        return "must not contain control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode"
    return None


class Schema:
    """One JSON value: `check` returns the cleaned value or records errors under `path`."""

    nullable: bool = False
    description: str = ""

    def check(self, value: Any, path: str, errors: dict[str, str]) -> Any:
        if value is None:
            if not self.nullable:
                errors[path] = "must not be null"
            return None
        return self._check(value, path, errors)

    def _check(self, value: Any, path: str, errors: dict[str, str]) -> Any:
        raise NotImplementedError

    def json_schema(self) -> dict:
        schema = self._json_schema()
        if self.nullable:
            schema["type"] = [schema["type"], "null"]
        if self.description:
            schema["description"] = self.description
        return schema

    def _json_schema(self) -> dict:
        raise NotImplementedError


@dataclass
class Str(Schema):
    max_length: int = 255
    min_length: int = 0
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    nullable: bool = False
    description: str = ""
    examples: tuple[str, ...] = ()

    def _check(self, value, path, errors):
        if not isinstance(value, str):
            errors[path] = "must be a string"
            return None
        problem = clean_text(value)
        if problem:
            errors[path] = problem
        elif self.enum is not None and value not in self.enum:
            errors[path] = f"must be one of {', '.join(self.enum)}"
        elif len(value) > self.max_length:
            errors[path] = f"must be at most {self.max_length} characters"
        elif len(value) < self.min_length:
            errors[path] = f"must be at least {self.min_length} characters"
        elif self.pattern is not None and not re.search(self.pattern, value):
            errors[path] = "has an invalid format"
        return value

    def _json_schema(self):
        schema: dict[str, Any] = {"type": "string"}
        if self.enum is not None:
            schema["enum"] = list(self.enum)
            return schema
        schema["maxLength"] = self.max_length
        if self.examples:
            schema["examples"] = list(self.examples)
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        return schema


@dataclass
class Int(Schema):
    minimum: int | None = None
    maximum: int | None = None
    nullable: bool = False
    description: str = ""

    def _check(self, value, path, errors):
        # bool is an int in Python, never in JSON.
        if isinstance(value, bool) or not isinstance(value, int):
            errors[path] = "must be an integer"
            return None
        if self.minimum is not None and value < self.minimum:
            errors[path] = f"must be at least {self.minimum}"
        elif self.maximum is not None and value > self.maximum:
            errors[path] = f"must be at most {self.maximum}"
        return value

    def _json_schema(self):
        schema: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


@dataclass
class Money(Schema):
    """A non-negative amount with at most two decimals, exact when it comes back as a float."""

    maximum: Decimal = Decimal("9999999999999.99")
    nullable: bool = False
    description: str = ""

    def _check(self, value, path, errors):
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors[path] = "must be a number"
            return None
        amount = Decimal(str(value))
        if not amount.is_finite() or amount < 0 or amount > self.maximum:
            errors[path] = f"must be between 0 and {self.maximum}"
        elif amount != amount.quantize(Decimal("0.01")):
            errors[path] = "must have at most two decimals"
        return amount

    def _json_schema(self):
        return {"type": "number", "minimum": 0, "maximum": float(self.maximum)}


@dataclass
class Bool(Schema):
    nullable: bool = False
    description: str = ""

    def _check(self, value, path, errors):
        if not isinstance(value, bool):
            errors[path] = "must be a boolean"
            return None
        return value

    def _json_schema(self):
        return {"type": "boolean"}


@dataclass
class Arr(Schema):
    items: Schema = field(default_factory=Str)
    max_items: int = 100
    min_items: int = 0
    nullable: bool = False
    description: str = ""

    def _check(self, value, path, errors):
        if not isinstance(value, list):
            errors[path] = "must be an array"
            return None
        if not self.min_items <= len(value) <= self.max_items:
            errors[path] = f"must have {self.min_items} to {self.max_items} items"
            return None
        return [self.items.check(item, f"{path}[{i}]", errors) for i, item in enumerate(value)]

    def _json_schema(self):
        schema = {"type": "array", "items": self.items.json_schema(), "maxItems": self.max_items}
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema


@dataclass
class Prop:
    schema: Schema
    required: bool = False


@dataclass
class Obj(Schema):
    """A JSON object with exactly these properties; `check` returns only the ones given."""

    props: dict[str, Prop] = field(default_factory=dict)
    nullable: bool = False
    description: str = ""
    min_properties: int = 0

    def _check(self, value, path, errors):
        if not isinstance(value, dict):
            errors[path or "body"] = "must be an object"
            return None
        prefix = f"{path}." if path else ""
        out = {}
        for name in value.keys() - self.props.keys():
            shown = name if clean_text(name) is None and len(name) <= 64 else "(unreadable)"
            errors[f"{prefix}{shown}"] = "unknown field"
        for name, prop in self.props.items():
            if name in value:
                out[name] = prop.schema.check(value[name], f"{prefix}{name}", errors)
            elif prop.required:
                errors[f"{prefix}{name}"] = "is required"
        if len(value) < self.min_properties:
            errors[path or "body"] = f"must have at least {self.min_properties} field"
        return out

    def _json_schema(self):
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: prop.schema.json_schema() for name, prop in self.props.items()},
            "additionalProperties": False,
        }
        required = [name for name, prop in self.props.items() if prop.required]
        if required:
            schema["required"] = required
        if self.min_properties:
            schema["minProperties"] = self.min_properties
        return schema


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate member name")
    return dict(pairs)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def read_json() -> Any:
    """The request body as JSON, or a 400: wrong media type, invalid or ambiguous JSON."""
    if not request.is_json:
        raise ApiError(400, "invalid_request", "The body must be application/json.")
    try:
        return json.loads(
            request.get_data(cache=False),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_request", "The body is not valid JSON.") from None


def validated(body: Obj) -> dict:
    """Read the request's JSON and check it against `body`: 400 if unreadable, else 422 with
    one message per offending field."""
    errors: dict[str, str] = {}
    value = body.check(read_json(), "", errors)
    if errors:
        raise ApiError(422, "validation_failed", "The request body is invalid.", fields=errors)
    return value
