"""The integrations part of the JSON API (CONTRACT): integrations, their health, and failover."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post, put
from litestar.params import FromPath, JSONBody

from app.accounts.auth import principal_of
from app.core.problems import Problem
from app.integrations import services

READ = {"scopes": ["integrations:read"]}
WRITE = {"scopes": ["integrations:write"]}


class IntegrationsApi(Controller):
    path = "/integrations"
    tags = ["Integrations"]

    @get("/", opt=READ, summary="Integrations with their providers, active provider and health")
    async def list_integrations(self, request: Request) -> dict[str, Any]:
        return {"items": await services.overview(principal_of(request).org_id), "next_cursor": None}

    @get("/{integration_id:uuid}", opt=READ, summary="One integration, with its failover audit trail")
    async def get_integration(self, request: Request, integration_id: FromPath[uuid.UUID]) -> dict[str, Any]:
        org_id = principal_of(request).org_id
        [one] = await services.overview(org_id, integration_id)
        return one | {"audit": await services.audit_trail(org_id, integration_id)}

    @get("/{integration_id:uuid}/failover", opt=READ, summary="The failover and circuit-breaker settings")
    async def get_failover(self, request: Request, integration_id: FromPath[uuid.UUID]) -> dict[str, Any]:
        [one] = await services.overview(principal_of(request).org_id, integration_id)
        return one["failover"]

    @put("/{integration_id:uuid}/failover", opt=WRITE, summary="Change the failover settings")
    async def put_failover(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[Any]
    ) -> dict[str, Any]:
        return await services.update_failover(principal_of(request).org_id, integration_id, data)

    @post("/{integration_id:uuid}/failover", opt=WRITE, status_code=200, summary="Trigger a failover")
    async def trigger(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[Any]
    ) -> dict[str, Any]:
        """`{"reason": "..."}`: traffic moves to the next healthy provider; the switch is audited."""
        if not isinstance(data, dict) or not isinstance(data.get("reason"), str):
            raise Problem(422, 'Send {"reason": "..."}: why you are failing over.')
        principal = principal_of(request)
        return await services.trigger_failover(principal.org_id, integration_id, data["reason"][:1000], principal.actor)


ROUTES = [IntegrationsApi]
