"""What the OpenAPI document at /schema says about errors: every /api/v1 route names the problem+json
statuses it can answer, with the body's shape, so a generated client knows them too.

Use `errors(...)` as a route's `responses=`: 401 (no or bad token) and 429 (the token's hourly limit)
apply to every API route, 403 to every route that needs a scope; add the route's own (404, 409, 422).
"""

from __future__ import annotations

from http import HTTPStatus

import msgspec
from litestar.openapi.datastructures import ResponseSpec

PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct):
    field: str
    """The body or query field, dotted for nested ones (`retry_policy.max_delay_ms`)."""
    message: str
    """What is wrong with it, in words a person can act on."""


class ProblemDetails(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


WHY = {
    400: "The request cannot be read: a body that is not valid JSON, or a parameter of the wrong type.",
    401: "No API token, or one that is unknown, expired or revoked.",
    403: "The token lacks the scope this route needs.",
    404: "No such resource in the token's organisation.",
    409: "The resource's state does not allow this now (the detail says why).",
    422: "A field is missing or not acceptable; `errors` names each field and what is wrong.",
    429: "The token's hourly request limit is used up; `Retry-After` says when to try again.",
}


def errors(*codes: int, scoped: bool = True) -> dict[int, ResponseSpec]:
    """The problem responses of a route: 401 and 429 always, 403 when `scoped`, then `codes`."""
    wanted = {401, 429, *([403] if scoped else []), *codes}
    return {
        code: ResponseSpec(
            data_container=ProblemDetails,
            description=WHY.get(code, HTTPStatus(code).phrase),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for code in sorted(wanted)
    }
