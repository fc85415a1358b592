"""An integration's failover panel: where traffic goes, each provider's health and history strip, the
audit trail, "Trigger failover", and the failover settings. Its live part refreshes itself every 5 s
(htmx), so an admin watches a failover happen without reloading."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import fields, flash, problems
from app.integrations import failover, queries, setup
from app.oauth import queries as oauth
from app.oauth.schemas import connection_out


class FailoverPanelPage(Controller):
    path = "/integrations"
    include_in_schema = False

    @get("/{integration_id:uuid}", name="integrations:detail")
    async def detail(self, request: HTMXRequest, integration_id: FromPath[uuid.UUID]) -> Template:
        if request.htmx and request.htmx.target == "failover-live":  # the panel's 5 s refresh: that part only
            [integration] = await queries.overview(principal_of(request).org_id, integration_id)
            context = await _live(principal_of(request).org_id, integration)
            return HTMXTemplate(template_name="integrations/partials/failover.html", context=context)
        return Template("integrations/detail.html", context=await self._context(request, integration_id))

    async def _context(self, request: Request, integration_id: uuid.UUID, **extra: Any) -> dict[str, Any]:
        org_id = principal_of(request).org_id
        [integration] = await queries.overview(org_id, integration_id)
        linked = {p["oauth_connection_id"] for p in integration["providers"] if p["oauth_connection_id"]}
        connections = [c for c in await oauth.connections(org_id) if str(c["id"]) in linked]
        return (
            await _live(org_id, integration)
            | {
                "audit": await queries.audit_trail(org_id, integration_id, limit=20),
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
            moved = await failover.trigger_failover(
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
        for name in failover.MODES:
            data[name] = str(form.get(name, ""))
        bad: dict[str, str] = {}
        for name in failover.FAILOVER_LIMITS:
            raw = str(form.get(name, "")).strip()
            try:
                data[name] = int(raw)
            except ValueError:
                bad[name] = "a whole number"
        try:
            if bad:
                raise problems.Problem(422, "", [{"field": k, "message": v} for k, v in bad.items()])
            await failover.update_failover(principal.org_id, integration_id, data)
        except problems.Problem as invalid:
            errors = {e["field"]: e["message"] for e in invalid.errors} | bad
            context = await self._context(request, integration_id, errors=errors, values=data)
            return Template("integrations/detail.html", context=context, status_code=422)
        await flash.push(session_id_of(request), "Saved the failover settings.", ok=True)
        return Redirect(path=request.app.route_reverse("integrations:detail", integration_id=integration_id))


async def _live(org_id: uuid.UUID, integration: dict[str, Any]) -> dict[str, Any]:
    """What the failover panel's live part shows: the providers, with their recent checks."""
    strips = await queries.health_strips(org_id, uuid.UUID(integration["id"]))
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
