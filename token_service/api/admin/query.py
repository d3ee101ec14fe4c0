"""Query parameters and cursor pagination (`limit`, opaque `cursor`, `{"items", "next_cursor"}`).

Pages are keyset pages: the cursor holds the sort key of the last row shown, so a page is one
indexed range scan however deep, and rows added or removed meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import request
from sqlalchemy import BigInteger, TypeDecorator, and_, or_

from ...extensions import db
from ...inputs import ascii_int, text_problem
from .errors import ApiError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Param:
    """A documented query parameter."""

    name: str
    schema: dict
    description: str = ""
    required: bool = False


PAGE_PARAMS = (
    Param(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Items per page.",
    ),
    Param(
        "cursor",
        {"type": "string", "maxLength": 1024},
        "`next_cursor` of the previous page.",
    ),
)


def _bad(name: str, message: str) -> ApiError:
    return ApiError(
        400, "invalid_request", f"Query parameter {name} {message}.", fields={name: message}
    )


def arg(name: str, max_length: int = 255) -> str | None:
    """A text query parameter, or None if absent."""
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise _bad(name, "is repeated")
    value = values[0]
    problem = text_problem(value)
    if problem:
        raise _bad(name, problem)
    if len(value) > max_length:
        raise _bad(name, f"must be at most {max_length} characters")
    return value


def arg_choice(name: str, choices: Sequence[str]) -> str | None:
    value = arg(name)
    if value is not None and value not in choices:
        raise _bad(name, f"must be one of {', '.join(choices)}")
    return value


def arg_bool(name: str, default: bool = False) -> bool:
    value = arg(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise _bad(name, "must be true or false")
    return value == "true"


def arg_datetime(name: str) -> datetime | None:
    """An RFC 3339 / ISO 8601 date-time; without a zone it is taken as UTC."""
    value = arg(name, 64)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        raise _bad(name, "must be an ISO 8601 date-time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _limit() -> int:
    value = arg("limit", 16)
    if value is None:
        return DEFAULT_LIMIT
    limit = ascii_int(value)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return limit


def _encode(values: list[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _python_type(column) -> type:
    kind = column.type
    if isinstance(kind, TypeDecorator):  # e.g. UTCDateTime: the type it stores as
        kind = kind.impl_instance
    return kind.python_type


def _int_bound(column) -> int:
    """Integers a column can hold: a cursor value beyond them is no row's key (and would
    overflow the driver: OverflowError on SQLite, out of range on PostgreSQL)."""
    return 2**63 if isinstance(column.type, BigInteger) else 2**31


def _decode(cursor: str, keys) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(keys):
            raise ValueError
        decoded = []
        for value, (column, _) in zip(values, keys, strict=True):
            if _python_type(column) is datetime:
                value = datetime.fromisoformat(value)
                if value.tzinfo is None:
                    raise ValueError
            elif _python_type(column) is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError
                if not -_int_bound(column) <= value < _int_bound(column):
                    raise ValueError
            elif not isinstance(value, str) or text_problem(value):
                raise ValueError
            decoded.append(value)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise _bad("cursor", "is not a cursor of this list") from None
    return decoded


def _after(keys, values):
    """Rows strictly after `values` in the order of `keys` ((column, descending) pairs)."""
    clauses = []
    for i, (column, descending) in enumerate(keys):
        beyond = column < values[i] if descending else column > values[i]
        equal = [keys[j][0] == values[j] for j in range(i)]
        clauses.append(and_(*equal, beyond))
    return or_(*clauses)


def page(query, keys: Sequence[tuple[Any, bool]], render: Callable[[Any], dict]) -> dict:
    """One page of `query` (a select of one entity) ordered by `keys`, which must end with a
    unique column; `render` turns a row into its JSON."""
    limit = _limit()
    cursor = arg("cursor", 1024)
    if cursor is not None:
        query = query.where(_after(keys, _decode(cursor, keys)))
    order = [column.desc() if descending else column.asc() for column, descending in keys]
    rows = list(db.session.scalars(query.order_by(*order).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = _encode([getattr(last, column.key) for column, _ in keys])
    return {"items": [render(row) for row in rows], "next_cursor": next_cursor}
