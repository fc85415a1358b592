"""Integration pages: the list with health at a glance, each integration's failover panel, and the forms
that set integrations and their providers up (checked by app.integrations.setup, as the API is)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import fields, flash, problems
from app.integrations import services, setup
from app.oauth import queries as oauth
from app.oauth.schemas import connection_out


class IntegrationPages(Controller):
    path = "/integrations"
    include_in_schema = False

    @get("/", name="integrations:list")
    async def list_page(self, request: Request) -> Template:
        items = await services.overview(principal_of(request).org_id)
        flashes = await flash.pop(session_id_of(request))
        context = {"integrations": items, "kinds": setup.KINDS, "flashes": flashes}
        return Template("integrations/list.html", context=context)

    @get("/new", name="integrations:new", guards=[admin_only])
    async def new_page(self) -> Template:
        return _integration_form({"name": "", "kind": "email", "description": ""}, {})

    @post("/new", name="integrations:create", guards=[admin_only], status_code=200)
    async def create(self, request: Request) -> Template | Redirect:
        data = _integration_data(await request.form())
        try:
            integration_id = await setup.create_integration(principal_of(request).org_id, data)
        except problems.Problem as invalid:
            return _integration_form(data, _field_errors(invalid), status_code=422)
        await flash.push(session_id_of(request), f"Created {data['name'].strip()}: now add its providers.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @get("/{integration_id:uuid}/edit", name="integrations:edit", guards=[admin_only])
    async def edit_page(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template:
        [integration] = await services.overview(principal_of(request).org_id, integration_id)
        return _integration_form(integration, {}, integration=integration)

    @post("/{integration_id:uuid}/edit", name="integrations:update", guards=[admin_only], status_code=200)
    async def update(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template | Redirect:
        org_id = principal_of(request).org_id
        [integration] = await services.overview(org_id, integration_id)
        data = _integration_data(await request.form())
        try:
            await setup.update_integration(org_id, integration_id, data)
        except problems.Problem as invalid:
            return _integration_form(data, _field_errors(invalid), integration=integration, status_code=422)
        await flash.push(session_id_of(request), "Saved.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @post("/{integration_id:uuid}/delete", name="integrations:delete", guards=[admin_only])
    async def remove(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Redirect:
        name = await setup.delete_integration(principal_of(request).org_id, integration_id)
        await flash.push(session_id_of(request), f"Deleted {name} with its providers and history.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:list"))

    @get("/{integration_id:uuid}/providers/new", name="integrations:provider-new", guards=[admin_only])
    async def new_provider_page(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template:
        org_id = principal_of(request).org_id
        [integration] = await services.overview(org_id, integration_id)
        values = {"name": "", "kind": "", "priority": "", "endpoint_url": "", "health_url": "", "enabled": True}
        return await _provider_form(org_id, integration, values | {"auth": "credentials"}, {})

    @post("/{integration_id:uuid}/providers/new", name="integrations:provider-create", guards=[admin_only])
    async def create_provider(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template | Redirect:
        return await _save_provider(request, integration_id, None)

    @get(
        "/{integration_id:uuid}/providers/{provider_id:uuid}/edit",
        name="integrations:provider-edit",
        guards=[admin_only],
    )
    async def edit_provider_page(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Template:
        org_id = principal_of(request).org_id
        [integration] = await services.overview(org_id, integration_id)
        provider = setup.pick_provider(integration, provider_id)
        auth = "oauth" if provider["oauth_connection_id"] else "credentials" if provider["has_credentials"] else "none"
        values = provider | {"auth": auth, "rate_limit_per_hour": provider["rate_limit_per_hour"] or ""}
        return await _provider_form(org_id, integration, values, {}, provider=provider)

    @post(
        "/{integration_id:uuid}/providers/{provider_id:uuid}/edit",
        name="integrations:provider-update",
        guards=[admin_only],
        status_code=200,
    )
    async def update_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Template | Redirect:
        return await _save_provider(request, integration_id, provider_id)

    @post(
        "/{integration_id:uuid}/providers/{provider_id:uuid}/enabled",
        name="integrations:provider-enabled",
        guards=[admin_only],
    )
    async def set_provider_enabled(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Redirect:
        principal = principal_of(request)
        enabled = (await request.form()).get("enabled") == "true"
        await setup.update_provider(
            principal.org_id, integration_id, provider_id, {"enabled": enabled}, principal.actor
        )
        provider = await setup.provider(principal.org_id, integration_id, provider_id)
        await flash.push(
            session_id_of(request), f"{provider['name']} is {'enabled' if enabled else 'disabled'}.", ok=True
        )
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @post(
        "/{integration_id:uuid}/providers/{provider_id:uuid}/check",
        name="integrations:provider-check",
        guards=[admin_only],
    )
    async def check_now(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Redirect:
        """Run the provider's health check now (after mending it, say) instead of waiting for the next."""
        org_id = principal_of(request).org_id
        await setup.check_owned_provider(org_id, integration_id, provider_id)  # else 404
        ok = await services.check_provider(provider_id)
        shown = await setup.provider(org_id, integration_id, provider_id)
        message = f"{shown['name']} is up." if ok else f"{shown['name']} is down: {shown['last_error']}."
        await flash.push(session_id_of(request), message, ok=bool(ok))
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @post(
        "/{integration_id:uuid}/providers/{provider_id:uuid}/delete",
        name="integrations:provider-delete",
        guards=[admin_only],
    )
    async def remove_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> Redirect:
        principal = principal_of(request)
        name = await setup.delete_provider(principal.org_id, integration_id, provider_id, principal.actor)
        await flash.push(session_id_of(request), f"Removed {name} and its health history.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @get("/{integration_id:uuid}", name="integrations:detail")
    async def detail(self, request: HTMXRequest, integration_id: FromPath[uuid.UUID]) -> Template:
        if request.htmx and request.htmx.target == "failover-live":  # the panel's 5 s refresh: that part only
            [integration] = await services.overview(principal_of(request).org_id, integration_id)
            context = await _live(principal_of(request).org_id, integration)
            return HTMXTemplate(template_name="integrations/partials/failover.html", context=context)
        return Template("integrations/detail.html", context=await self._context(request, integration_id))

    async def _context(self, request: Request, integration_id: uuid.UUID, **extra: Any) -> dict[str, Any]:
        org_id = principal_of(request).org_id
        [integration] = await services.overview(org_id, integration_id)
        linked = {p["oauth_connection_id"] for p in integration["providers"] if p["oauth_connection_id"]}
        connections = [c for c in await oauth.connections(org_id) if str(c["id"]) in linked]
        return (
            await _live(org_id, integration)
            | {
                "audit": await services.audit_trail(org_id, integration_id, limit=20),
                "connections": [connection_out(c) for c in connections],
                "histories": await oauth.histories(org_id, [c["id"] for c in connections], limit=5),
                "flashes": await flash.pop(session_id_of(request)),
                "errors": {},
                "values": integration["failover"],
                "kinds": setup.KINDS,
            }
            | extra
        )

    @post("/{integration_id:uuid}/failover", name="integrations:trigger", guards=[admin_only])
    async def trigger(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        form = await request.form()
        chosen = str(form.get("to_provider_id", ""))
        try:
            target = fields.as_uuid(chosen) if chosen else None
            if chosen and target is None:
                raise problems.Problem(422, "Choose one of the providers.")
            moved = await services.trigger_failover(
                principal.org_id, integration_id, str(form.get("reason", ""))[:1000], principal.actor, target
            )
        except problems.Problem as refused:
            await flash.push(session_id_of(request), str(refused.detail), ok=False)
        else:
            await flash.push(session_id_of(request), f"Traffic moved from {moved['from']} to {moved['to']}.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))

    @post("/{integration_id:uuid}/settings", name="integrations:settings", guards=[admin_only], status_code=200)
    async def settings(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template | Redirect:
        principal = principal_of(request)
        form = await request.form()
        data: dict[str, Any] = {}
        for name in services.MODES:
            data[name] = str(form.get(name, ""))
        bad: dict[str, str] = {}
        for name in services.FAILOVER_LIMITS:
            raw = str(form.get(name, "")).strip()
            try:
                data[name] = int(raw)
            except ValueError:
                bad[name] = "a whole number"
        try:
            if bad:
                raise problems.Problem(422, "", [{"field": k, "message": v} for k, v in bad.items()])
            await services.update_failover(principal.org_id, integration_id, data)
        except problems.Problem as invalid:
            errors = {e["field"]: e["message"] for e in invalid.errors} | bad
            context = await self._context(request, integration_id, errors=errors, values=data)
            return Template("integrations/detail.html", context=context, status_code=422)
        await flash.push(session_id_of(request), "Saved the failover settings.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))


async def _save_provider(
    request: Request, integration_id: uuid.UUID, provider_id: uuid.UUID | None
) -> Template | Redirect:
    """The provider form, submitted to add a provider (`provider_id` None) or to change one."""
    principal = principal_of(request)
    [integration] = await services.overview(principal.org_id, integration_id)
    provider = setup.pick_provider(integration, provider_id) if provider_id else None
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
        values, shown = _provider_values(form), errors | _field_errors(invalid)
        return await _provider_form(principal.org_id, integration, values, shown, provider=provider, status_code=422)
    done = f"Saved {provider['name']}." if provider else f"Added {data['name'].strip()}."
    await flash.push(session_id_of(request), done, ok=True)
    return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))


async def _live(org_id: uuid.UUID, integration: dict[str, Any]) -> dict[str, Any]:
    """What the failover panel's live part shows: the providers, with their recent checks."""
    strips = await services.health_strips(org_id, uuid.UUID(integration["id"]))
    return {
        "integration": integration,
        "strips": strips,
        "health": {provider: _health_summary(checks) for provider, checks in strips.items()},
    }


def _health_summary(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Of a provider's last checks (the strip): how many were up, and the median latency of those."""
    latencies = sorted(c["latency_ms"] for c in checks if c["ok"] and c["latency_ms"] is not None)
    return {
        "checks": len(checks),
        "up_percent": round(100 * sum(1 for c in checks if c["ok"]) / len(checks)) if checks else None,
        "median_ms": latencies[len(latencies) // 2] if latencies else None,
    }


def _field_errors(invalid: problems.Problem) -> dict[str, str]:
    return {e["field"]: e["message"] for e in invalid.errors} or {"form": str(invalid.detail)}


def _integration_data(form: FormMultiDict) -> dict[str, Any]:
    return {name: str(form.get(name, "")) for name in setup.INTEGRATION_FIELDS}


def _integration_form(values: dict[str, Any], errors: dict[str, str], *, integration=None, status_code=200):
    context = {"values": values, "errors": errors, "integration": integration, "kinds": setup.KINDS}
    return Template("integrations/form.html", context=context, status_code=status_code)


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
            errors = _field_errors(invalid) | errors
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


ROUTES = [IntegrationPages]
