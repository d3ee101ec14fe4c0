"""The admin blueprint and its one way of declaring a route.

`@operation(...)` registers a view together with what the OpenAPI document says about it
(body, query parameters, responses), and wraps it: authenticate, validate the body, run the
view, commit a write or roll back a read. Each request is one transaction; an error anywhere
rolls it all back. The helpers below are what the views share: the row or a 404, `If-Match`,
the audit event by the caller, the JSON answer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from flask import Blueprint, Response, g, jsonify, make_response, request

from ... import audit
from ...extensions import db
from ...inputs import text_problem
from . import errors
from .auth import Principal, authenticate
from .errors import ApiError
from .query import PAGE_PARAMS, Param
from .schema import Body, Representation, validated

T = TypeVar("T")

bp = Blueprint("admin", __name__, url_prefix="/admin")
errors.register(bp)


@bp.after_app_request
def _no_store(response: Response) -> Response:
    """Every answer under /admin (lists, resources, errors, unknown routes) holds directory
    data or says who may see it: no cache may keep it (RFC 9111 §5.2.2.5)."""
    if request.path == bp.url_prefix or request.path.startswith(bp.url_prefix + "/"):
        response.headers["Cache-Control"] = "no-store"
    return response


MAX_ID_LENGTH = 128
#: A variable part of a Flask rule (`<entity_id>`, `<path:name>`); group 1 is its name.
PATH_PARAM = re.compile(r"<(?:[a-z]+:)?(\w+)>")
#: Set on a write's answer when a deny-list entry could not be written yet (store down).
DENY_LIST_HEADER = "Deny-List"


@dataclass(frozen=True)
class Operation:
    """One documented admin endpoint."""

    method: str
    rule: str  # Flask form: /legal-entities/<entity_id>
    endpoint: str
    summary: str
    tag: str
    write: bool
    body: type[Body] | None = None
    query: tuple[Param, ...] = ()
    responses: dict[int, type[Representation] | None] = field(default_factory=dict)
    conflicts: bool = False
    etag: bool = False
    description: str = ""

    @property
    def path(self) -> str:
        """OpenAPI form: /admin/legal-entities/{entity_id}"""
        return "/admin" + PATH_PARAM.sub(r"{\1}", self.rule)

    @property
    def path_params(self) -> list[str]:
        return PATH_PARAM.findall(self.rule)


#: Every admin operation, in declaration order: the OpenAPI document is built from this.
OPERATIONS: list[Operation] = []


def operation(
    method: str,
    rule: str,
    *,
    summary: str,
    tag: str,
    responses: dict[int, type[Representation] | None],
    body: type[Body] | None = None,
    query: tuple[Param, ...] = (),
    paginated: bool = False,
    conflicts: bool = False,
    etag: bool = False,
    description: str = "",
) -> Callable:
    """Declare an admin endpoint. `body` is the request body's model (the view gets the fields
    given, validated, as its `body` argument); `responses` maps success statuses to the
    response's model (None: no body); error responses are derived (401/403 always, 404 with
    path parameters, 400/422 with a body, 409 if `conflicts`, 412 if `etag` on a write)."""
    write = method != "GET"

    def decorator(view: Callable) -> Callable:
        op = Operation(
            method=method,
            rule=rule,
            endpoint=view.__name__,
            summary=summary,
            tag=tag,
            write=write,
            body=body,
            query=tuple(query) + (PAGE_PARAMS if paginated else ()),
            responses=responses,
            conflicts=conflicts,
            etag=etag,
            description=description or (view.__doc__ or "").strip(),
        )
        OPERATIONS.append(op)

        @functools.wraps(view)
        def wrapper(**kwargs):
            g.admin = authenticate(write)
            for name, value in kwargs.items():
                # An identifier no row can have: answer before the database sees it.
                if len(value) > MAX_ID_LENGTH or text_problem(value):
                    raise ApiError.of(404, f"{name} not found")
            if body is not None:
                kwargs["body"] = validated(body)
            result = view(**kwargs)
            if write:
                db.session.commit()
            else:
                db.session.rollback()
            if g.get("deny_list_queued"):
                # Committed, but the store refused a deny-list entry: it is queued and written
                # when the store answers (revocation.Outbox); introspection refuses the tokens
                # meanwhile through the database.
                response = make_response(result)
                response.headers[DENY_LIST_HEADER] = "queued"
                return response
            return result

        bp.add_url_rule(rule, view.__name__, wrapper, methods=[method])
        return wrapper

    return decorator


def principal() -> Principal:
    return g.admin


def actor() -> tuple[str, str]:
    """(actor_type, actor_id) of the caller, for audit events and lifecycle functions."""
    return g.admin.actor


def record(action: str, **fields) -> None:
    """The audit event of a change the caller made."""
    kind, who = actor()
    audit.record(action, actor_type=kind, actor_id=who, **fields)


def found(model: type[T], key, what: str, *, field: str | None = None, lock: bool = False) -> T:
    """The row of `model` with primary key `key` (locked for update with `lock`), or a 404
    "`what` not found" that blames `field` when the key came from one."""
    row = db.session.get(model, key, with_for_update=lock)
    if row is None:
        raise ApiError.of(404, f"{what} not found", field)
    return row


def for_change(model: type[T], key, what: str) -> T:
    """The row a write is about to change: locked, and as the caller last read it (`If-Match`,
    else 412)."""
    row = found(model, key, what, lock=True)
    check_version(row.version)
    return row


def check_version(version: int) -> None:
    """Honour `If-Match` (optimistic locking): 412 unless it names the current version."""
    if "If-Match" not in request.headers:
        return
    if not request.if_match.contains(str(version)):
        raise ApiError(
            412,
            "precondition_failed",
            "The resource changed since it was read: fetch it again and retry.",
        )


def respond(body: dict, status: int = 200, version: int | None = None, location: str | None = None):
    """JSON with `ETag` from the row version, and `Location` for a creation."""
    response: Response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    if version is not None:
        response.set_etag(str(version))
    if location is not None:
        response.headers["Location"] = location
    return response


def no_content():
    return "", 204, {"Cache-Control": "no-store"}
