"""Errors as people and programs want them: RFC 9457 problem+json under /api/, a page everywhere else.

Every exception ends here. A 4xx says what was wrong; an unexpected error is logged with a reference
that the response repeats, and never shows a stack trace.
"""

from __future__ import annotations

import logging
import secrets
from http import HTTPStatus
from typing import Any

import asyncpg
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    ValidationException,
)
from litestar.response import Redirect, Template

log = logging.getLogger("intime.errors")
PROBLEM_JSON = "application/problem+json"


class TooManyRequests(HTTPException):
    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail=detail, headers={"Retry-After": str(max(1, retry_after))})


class NotFound(LookupError):
    """A service's "no such row in this organisation": every caller answers 404, page or API alike."""


class Problem(HTTPException):
    """A 4xx with a field-level error list, e.g. 422 for input that parses but is not acceptable."""

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail=detail, status_code=status_code)
        self.errors = errors or []


def problem_response(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _validation_errors(exc: ValidationException) -> list[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {
                    "field": str(item.get("key") or item.get("source") or ""),
                    "message": item.get("message", ""),
                }
            )
    return errors


def _not_an_object(exc: ValidationException) -> bool:
    items = exc.extra if isinstance(exc.extra, list) else []
    return any(
        isinstance(item, dict)
        and str(item.get("source")) in ("body", "ParamType.BODY")
        and str(item.get("message", "")).startswith("Expected `object")
        for item in items
    )


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    detail = exc.detail or HTTPStatus(status).phrase
    if _is_api(request):
        errors = getattr(exc, "errors", None)
        if isinstance(exc, ValidationException):
            errors = _validation_errors(exc)
            malformed = "malformed" in detail.lower() or "decode" in detail.lower()
            status = 400 if malformed else 422
            detail = "The request body is not valid JSON." if malformed else "The request is not valid."
            if _not_an_object(exc):
                # Bodies are decoded loosely and judged field by field by the services; what is left
                # for the decoder to refuse is a body that is not an object at all.
                detail, errors = "The request body must be a JSON object.", None
        return problem_response(status, detail, errors=errors, headers=exc.headers, instance=request.url.path)

    if isinstance(exc, NotAuthorizedException):
        target = request.app.route_reverse("login") + f"?next={request.url.path}"
        if request.headers.get("hx-request"):
            return Response(content="", status_code=200, headers={"HX-Redirect": target})
        return Redirect(path=target)
    if status == 403 and "CSRF" in detail:
        detail = "This form had expired (or was sent from another site). Reload the page and try again."
    return Template(
        template_name="errors/error.html",
        context={"status": status, "title": HTTPStatus(status).phrase, "detail": detail},
        status_code=status,
        headers=exc.headers,
    )


def handle_not_found(request: Request, exc: NotFound) -> Response:
    return handle_http_exception(request, NotFoundException(str(exc) or "Not found."))


def handle_data_error(request: Request, exc: asyncpg.DataError) -> Response:
    """Input the database refuses (a NUL character, a number out of range) is the client's to fix."""
    detail = "A value in the request cannot be stored (for example a NUL character or an out-of-range number)."
    return handle_http_exception(request, Problem(422 if _is_api(request) else 400, detail))


def handle_unexpected(request: Request, exc: Exception) -> Response:
    reference = secrets.token_hex(6)
    log.exception("unhandled error %s on %s %s", reference, request.method, request.url.path)
    detail = f"Something went wrong on our side (reference {reference}). It has been logged."
    if _is_api(request):
        return problem_response(500, detail, instance=request.url.path)
    return Response(
        content=f"<!doctype html><title>Error</title><h1>Internal error</h1><p>{detail}</p>",
        status_code=500,
        media_type=MediaType.HTML,
    )


EXCEPTION_HANDLERS = {
    HTTPException: handle_http_exception,
    NotFound: handle_not_found,
    asyncpg.DataError: handle_data_error,
    Exception: handle_unexpected,
}
