"""What every webhooks API module shares: scopes, the problem sets, and reading bodies and queries
the way clients already know (a field's own message for each refusal)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request
from litestar.params import QueryParameter

from app.core import paging
from app.core.apidoc import errors
from app.core.problems import Problem
from app.webhooks import operations, queries

READ = {"scopes": ["webhooks:read"]}
WRITE = {"scopes": ["webhooks:write"]}
DLQ_WRITE = {"scopes": ["dlq:write"]}
S = TypeVar("S", bound=msgspec.Struct)
# Query parameters document their bounds and choices without Litestar enforcing them: paging and
# queries refuse a bad value with the message (and field) clients already get.
Limit = Annotated[int | None, QueryParameter(schema_extra={"minimum": 1, "maximum": paging.MAX_LIMIT})]
# The problems a route names by what it takes: a body or query (422), a resource in its path (404).
# Litestar documents a 400 for every route with parameters; listing it here makes it problem+json.
CHECKED, ONE, ONE_CHECKED = errors(400, 422), errors(400, 404), errors(400, 404, 422)


def out(struct: type[S], source: Any, **given: Any) -> S:
    """A response Struct from a row (a dict) or an object, `given` taking precedence; the values go
    out as read, with no second validation on the way."""
    read = source.__getitem__ if isinstance(source, dict) else partial(getattr, source)
    return struct(**{name: given[name] if name in given else read(name) for name in struct.__struct_fields__})


def as_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Problem(422, "The request body must be a JSON object.")
    return data


async def sent_fields(request: Request) -> dict[str, Any]:
    """The body's fields as sent, unknown ones included: the service refuses those by name, and a
    PATCH changes exactly the fields present (an explicit null is not an absent field)."""
    return as_object(await request.json())


async def read_query(coro):
    try:
        return await coro
    except queries.BadQuery as error:
        raise Problem(422, str(error), [{"field": error.field, "message": str(error)}]) from None


async def operation(coro):
    try:
        return await coro
    except operations.Conflict as error:
        raise Problem(409, str(error)) from None
