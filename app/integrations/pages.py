"""Integration pages: the list with health at a glance, and each integration's failover panel."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import flash, problems
from app.integrations import services
from app.oauth import services as oauth


class IntegrationPages(Controller):
    path = "/integrations"
    include_in_schema = False

    @get("/", name="integrations:list")
    async def list_page(self, request: Request) -> Template:
        items = await services.overview(principal_of(request).org_id)
        return Template("integrations/list.html", context={"integrations": items})

    @get("/{integration_id:uuid}", name="integrations:detail")
    async def detail(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Template:
        return Template("integrations/detail.html", context=await self._context(request, integration_id))

    async def _context(self, request: Request, integration_id: uuid.UUID, **extra: Any) -> dict[str, Any]:
        org_id = principal_of(request).org_id
        [integration] = await services.overview(org_id, integration_id)
        linked = {p["oauth_connection_id"] for p in integration["providers"] if p["oauth_connection_id"]}
        connections = [c for c in await oauth.connections(org_id) if str(c["id"]) in linked]
        from app.oauth.web import connection_out

        return {
            "integration": integration,
            "strips": await services.health_strips(org_id, integration_id),
            "audit": await services.audit_trail(org_id, integration_id, limit=20),
            "connections": [connection_out(c) for c in connections],
            "histories": {str(c["id"]): await oauth.history(org_id, c["id"], limit=5) for c in connections},
            "flashes": await flash.pop(session_id_of(request)),
            "errors": {},
            "values": integration["failover"],
        } | extra

    @post("/{integration_id:uuid}/failover", name="integrations:trigger", guards=[admin_only])
    async def trigger(self, request: Request, integration_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        form = await request.form()
        try:
            moved = await services.trigger_failover(
                principal.org_id, integration_id, str(form.get("reason", ""))[:1000], principal.actor
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


ROUTES = [IntegrationPages]
