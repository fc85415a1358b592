"""A provider's form (add one to an integration, or change it) and its actions on the failover panel:
enable or disable it, check its health now, remove it."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import fields, flash, problems
from app.integrations import health, queries, setup
from app.integrations.pages.forms import field_errors
from app.oauth import queries as oauth
from app.oauth.schemas import connection_out

ONE = "/{integration_id:uuid}/providers/{provider_id:uuid}"


class ProviderPages(Controller):
    path = "/integrations"
    include_in_schema = False
    guards = [admin_only]

    @get("/{integration_id:uuid}/providers/new", name="integrations:provider-new")
    async def new_provider_page(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template:
        org_id = principal_of(request).org_id
        [integration] = await queries.overview(org_id, integration_id)
        values = {"name": "", "kind": "", "priority": "", "endpoint_url": "", "health_url": "", "enabled": True}
        return await _provider_form(org_id, integration, values | {"auth": "credentials"}, {})

    @post("/{integration_id:uuid}/providers/new", name="integrations:provider-create")
    async def create_provider(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template | Redirect:
        return await _save_provider(request, integration_id, None)

    @get(f"{ONE}/edit", name="integrations:provider-edit")
    async def edit_provider_page(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Template:
        org_id = principal_of(request).org_id
        [integration] = await queries.overview(org_id, integration_id)
        provider = queries.pick_provider(integration, provider_id)
        auth = "oauth" if provider["oauth_connection_id"] else "credentials" if provider["has_credentials"] else "none"
        values = provider | {"auth": auth, "rate_limit_per_hour": provider["rate_limit_per_hour"] or ""}
        return await _provider_form(org_id, integration, values, {}, provider=provider)

    @post(f"{ONE}/edit", name="integrations:provider-update", status_code=200)
    async def update_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        return await _save_provider(request, integration_id, provider_id)

    @post(f"{ONE}/enabled", name="integrations:provider-enabled")
    async def set_provider_enabled(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Redirect:
        principal = principal_of(request)
        enabled = (await request.form()).get("enabled") == "true"
        await setup.update_provider(
            principal.org_id, integration_id, provider_id, {"enabled": enabled}, principal.actor
        )
        provider = await queries.provider(principal.org_id, integration_id, provider_id)
        await flash.push(
            session_id_of(request), f"{provider['name']} is {'enabled' if enabled else 'disabled'}.", ok=True
        )
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @post(f"{ONE}/check", name="integrations:provider-check")
    async def check_now(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Redirect:
        """Run the provider's health check now (after mending it, say) instead of waiting for the next."""
        org_id = principal_of(request).org_id
        await setup.check_owned_provider(org_id, integration_id, provider_id)  # else 404
        ok = await health.check_provider(provider_id)
        shown = await queries.provider(org_id, integration_id, provider_id)
        message = f"{shown['name']} is up." if ok else f"{shown['name']} is down: {shown['last_error']}."
        await flash.push(session_id_of(request), message, ok=bool(ok))
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @post(f"{ONE}/delete", name="integrations:provider-delete")
    async def remove_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Redirect:
        principal = principal_of(request)
        name = await setup.delete_provider(principal.org_id, integration_id, provider_id, principal.actor)
        await flash.push(session_id_of(request), f"Removed {name} and its health history.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))


async def _save_provider(
    request: Request, integration_id: uuid.UUID, provider_id: uuid.UUID | None
) -> Template | Redirect:
    """The provider form, submitted to add a provider (`provider_id` None) or to change one."""
    principal = principal_of(request)
    [integration] = await queries.overview(principal.org_id, integration_id)
    provider = queries.pick_provider(integration, provider_id) if provider_id else None
    form = await request.form()
    data, errors = await _provider_data(principal.org_id, form, provider)
    try:
        if errors:
            raise fields.invalid("provider", errors)
        if provider_id is None:
            await setup.create_provider(principal.org_id, integration_id, data)
        else:
            await setup.update_provider(principal.org_id, integration_id, provider_id, data, principal.actor)
    except problems.Problem as invalid:
        values, shown = _provider_values(form), errors | field_errors(invalid)
        return await _provider_form(principal.org_id, integration, values, shown, provider=provider, status_code=422)
    done = f"Saved {provider['name']}." if provider else f"Added {data['name'].strip()}."
    await flash.push(session_id_of(request), done, ok=True)
    return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))


def _provider_values(form: FormMultiDict) -> dict[str, Any]:
    """What the form showed, to show again beside its errors (never the credentials typed)."""
    names = ("name", "kind", "priority", "endpoint_url", "health_url", "rate_limit_per_hour", "oauth_connection_id")
    values: dict[str, Any] = {name: str(form.get(name, "")) for name in names}
    return values | {"enabled": form.get("enabled") == "on", "auth": str(form.get("auth", "none"))}


async def _provider_data(
    org_id: uuid.UUID, form: FormMultiDict, current: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A submitted provider form as the API's JSON shape, plus the errors only the form can make, with
    (when there are some) the others, so that every field's error is shown at once.

    How it authenticates is a choice of three: no credentials, credentials (left empty: keep the stored
    ones), or one of the organisation's OAuth connections."""
    data: dict[str, Any] = {
        name: str(form.get(name, "")) for name in ("name", "kind", "endpoint_url", "health_url", "rate_limit_per_hour")
    }
    if str(form.get("priority", "")).strip() or current is not None:
        data["priority"] = str(form.get("priority", ""))
    data["enabled"] = form.get("enabled") == "on"
    errors: dict[str, str] = {}
    auth = str(form.get("auth", "none"))
    credentials = str(form.get("credentials", ""))
    if auth == "none":
        data |= {"credentials": None, "oauth_connection_id": None}
    elif auth == "credentials":
        if credentials:
            data["credentials"] = credentials
        elif current is None or not current["has_credentials"]:
            errors["credentials"] = "Enter the API key or token the provider gave you."
    elif auth == "oauth":
        if not str(form.get("oauth_connection_id", "")):
            errors["oauth_connection_id"] = "Choose one of the organisation's OAuth connections."
        data["oauth_connection_id"] = str(form.get("oauth_connection_id", "")) or None
    else:
        errors["auth"] = "Choose how the provider is authorised."
    if errors:
        try:
            await setup.validate_provider(org_id, {k: v for k, v in data.items() if k not in errors}, partial=True)
        except problems.Problem as invalid:
            errors = field_errors(invalid) | errors
    return data, errors


async def _provider_form(org_id, integration, values, errors, *, provider=None, status_code=200) -> Template:
    connections = [connection_out(c) for c in await oauth.connections(org_id)]
    context = {
        "integration": integration,
        "provider": provider,
        "values": values,
        "errors": errors,
        "connections": connections,
    }
    return Template("integrations/provider_form.html", context=context, status_code=status_code)
