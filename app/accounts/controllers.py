"""Sign-in, sign-out and the API tokens page."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template

from app.accounts import services, sessions, tokens
from app.accounts.auth import admin_only, principal_of
from app.accounts.services import AccountError, TooManyAttempts
from app.core.urls import local_path


class LoginController(Controller):
    include_in_schema = False

    @get("/login", name="login")
    async def login_page(self, request: Request, next: FromQuery[str | None] = None) -> Template | Redirect:
        index = request.app.route_reverse("portal:index")
        if request.scope.get("user") is not None:
            return Redirect(path=local_path(next, index))
        return Template("accounts/login.html", context={"next": next or "", "email": "", "error": None})

    @post("/login", name="login:submit")
    async def login(self, request: Request) -> Template | Redirect:
        form = await request.form()
        email = str(form.get("email", ""))
        password = str(form.get("password", ""))
        target = local_path(str(form.get("next", "")), request.app.route_reverse("portal:index"))
        client_ip = request.client.host if request.client else "unknown"
        try:
            user = await services.authenticate(email, password, client_ip)
        except TooManyAttempts as error:
            return Template(
                "accounts/login.html",
                context={"next": target, "email": email, "error": str(error)},
                status_code=429,
                headers={"Retry-After": str(error.retry_after)},
            )
        except AccountError as error:
            return Template(
                "accounts/login.html",
                context={"next": target, "email": email, "error": str(error)},
                status_code=400,
            )
        # A new session id at every sign-in, and the old one (if any) forgotten.
        await sessions.destroy(request.cookies.get(sessions.COOKIE_NAME))
        session_id = await sessions.create(str(user.id))
        options = sessions.cookie_options()
        return Redirect(path=target, cookies=[Cookie(value=session_id, **options)])

    @post("/logout", name="logout")
    async def logout(self, request: Request) -> Redirect:
        await sessions.destroy(request.cookies.get(sessions.COOKIE_NAME))
        options = sessions.cookie_options() | {"max_age": 0}
        return Redirect(path=request.app.route_reverse("login"), cookies=[Cookie(value="", **options)])


def _token_context(form: dict[str, Any] | None = None, errors: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "scopes": tokens.SCOPES,
        "form": form or {"name": "", "scopes": [], "expires_in_days": "90", "rate_limit_per_hour": "1000"},
        "errors": errors or {},
        "created": None,
    }


class TokensController(Controller):
    path = "/api-tokens"
    include_in_schema = False

    @get("/", name="tokens:list")
    async def tokens_page(self, request: HTMXRequest) -> Template:
        principal = principal_of(request)
        context = _token_context() | {"tokens": await tokens.list_tokens(principal.org_id)}
        return HTMXTemplate(template_name="accounts/tokens.html", context=context)

    @post("/", name="tokens:create", guards=[admin_only])
    async def create(self, request: HTMXRequest) -> Template:
        principal = principal_of(request)
        raw = await request.form()
        name = str(raw.get("name", ""))
        scopes = [str(s) for s in raw.getall("scopes", [])]
        expires_raw = str(raw.get("expires_in_days", ""))
        rate_raw = str(raw.get("rate_limit_per_hour", ""))
        form = {"name": name, "scopes": scopes, "expires_in_days": expires_raw, "rate_limit_per_hour": rate_raw}
        errors: dict[str, str] = {}
        expires = _optional_int(expires_raw, "expires_in_days", errors)
        rate = _optional_int(rate_raw, "rate_limit_per_hour", errors)
        created = None
        if not errors:
            try:
                row, token = await tokens.create_token(
                    principal.org_id,
                    name,
                    scopes,
                    expires_in_days=expires,
                    rate_limit_per_hour=tokens.DEFAULT_RATE_LIMIT if rate is None else rate,
                    created_by=principal.user_id,
                )
                created = {"name": row.name, "token": token}
            except AccountError as error:
                errors[error.field or "name"] = str(error)
        context = _token_context(form if errors else None, errors)
        context |= {"created": created, "tokens": await tokens.list_tokens(principal.org_id)}
        status = 422 if errors else 201
        if request.htmx:
            return HTMXTemplate(template_name="accounts/partials/token_panel.html", context=context, status_code=status)
        return Template("accounts/tokens.html", context=context, status_code=status)

    @post("/{token_id:uuid}/revoke", name="tokens:revoke", guards=[admin_only])
    async def revoke(self, request: HTMXRequest, token_id: FromPath[uuid.UUID]) -> Response:
        principal = principal_of(request)
        if not await tokens.revoke_token(principal.org_id, token_id):
            raise NotFoundException("No such active token in this organisation.")
        if request.htmx:
            rows = await tokens.list_tokens(principal.org_id)
            return HTMXTemplate(template_name="accounts/partials/token_table.html", context={"tokens": rows})
        return Redirect(path=request.app.route_reverse("tokens:list"))


def _optional_int(raw: str, field: str, errors: dict[str, str]) -> int | None:
    raw = raw.strip()
    if raw in ("", "never"):
        return None
    try:
        return int(raw)
    except ValueError:
        errors[field] = "Enter a whole number."
        return None
