"""Who is asking, and may they: one middleware that resolves the principal, and the guards that check it.

Pages are signed in by the session cookie; `/api/` only by a Bearer token (a cookie never authorises
the API, so the API needs no CSRF token and a stolen page session cannot script it).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.accounts import sessions, tokens
from app.accounts.services import Principal
from app.core.problems import TooManyRequests


class AuthMiddleware(ASGIMiddleware):
    exclude_path_pattern = ("^/static/", "^/healthz$")

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["user"] = None
        scope["auth"] = None
        if scope["path"].startswith("/api/"):
            await self._bearer(scope)
        else:
            await self._session(scope)
        await next_app(scope, receive, send)

    async def _session(self, scope: Scope) -> None:
        cookie = _cookie(scope, sessions.COOKIE_NAME)
        record = await sessions.load(cookie)
        if record is None:
            return
        from app.accounts.services import principal_for_user

        principal = await principal_for_user(record["user_id"])
        if principal is not None:
            scope["user"] = principal
            scope["auth"] = {"session_id": cookie}

    async def _bearer(self, scope: Scope) -> None:
        header = _header(scope, b"authorization")
        if header is None:
            return
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            scope["auth"] = {"error": "Use the header `Authorization: Bearer <token>`."}
            return
        try:
            principal, limit = await tokens.principal_for_token(token.strip())
        except tokens.TokenRejected as rejected:
            scope["auth"] = {"error": rejected.detail}
            return
        scope["user"] = principal
        scope["auth"] = {"token_id": principal.token_id, "rate_limit_per_hour": limit}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The signed-in principal; guards have made sure there is one."""
    principal = connection.scope.get("user")
    if principal is None:
        raise NotAuthorizedException("Sign in to continue.")
    return principal


def session_id_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The signed-in browser session's id (None for API tokens and anonymous requests)."""
    auth = connection.scope.get("auth") or {}
    return auth.get("session_id") if isinstance(auth, dict) else None


# --- guards -------------------------------------------------------------------------------------------


async def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.scope.get("user") is None:
        raise NotAuthorizedException("Sign in to continue.")


async def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    principal = principal_of(connection)
    if not principal.is_admin:
        raise PermissionDeniedException("This needs the admin role; viewers can look but not change.")


async def api_token(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Bearer token present and valid, the route's scopes granted, the hourly limit not spent."""
    principal = connection.scope.get("user")
    auth = connection.scope.get("auth") or {}
    if principal is None or principal.token_id is None:
        raise NotAuthorizedException(auth.get("error") or "This API needs `Authorization: Bearer <token>`.")
    needed = set(handler.opt.get("scopes", ()))
    missing = sorted(needed - principal.scopes)
    if missing:
        raise PermissionDeniedException(f"The token lacks the scope {', '.join(missing)}.")
    await charge(connection, 1)


async def charge(connection: ASGIConnection[Any, Any, Any, Any], amount: int) -> None:
    """Count `amount` requests against the token's hourly limit; 429 once it is spent. The guard counts
    every request once; a batch counts its other events with this too, so each event counts."""
    principal = principal_of(connection)
    auth = connection.scope.get("auth") or {}
    assert principal.token_id is not None
    window = await tokens.charge_request(principal.token_id, auth["rate_limit_per_hour"], amount)
    connection.scope.setdefault("state", {})["rate_limit"] = window
    if window.exceeded:
        raise TooManyRequests(
            f"The token's limit of {window.limit} requests per hour is spent; it resets in {window.reset_in} s.",
            retry_after=window.reset_in,
        )
