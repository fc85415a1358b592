"""The integrations part of the JSON API (CONTRACT): integrations, their health, and failover."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from app.accounts.auth import principal_of
from app.core import fields, paging
from app.core.problems import Problem
from app.integrations import services, setup

READ = {"scopes": ["integrations:read"]}
WRITE = {"scopes": ["integrations:write"]}


class IntegrationsApi(Controller):
    path = "/integrations"
    tags = ["Integrations"]

    @get("/", opt=READ, summary="Integrations with their providers, active provider and health, oldest first")
    async def list_integrations(
        self, request: Request, limit: FromQuery[int | None] = None, cursor: FromQuery[str | None] = None
    ) -> dict[str, Any]:
        size, after = paging.request_window(limit, cursor, 50)
        rows = await services.overview(principal_of(request).org_id, after=after, limit=size + 1)
        items, next_cursor = paging.cut(rows, size, lambda i: (i["created_at"], uuid.UUID(i["id"])))
        return {"items": items, "next_cursor": next_cursor}

    @post("/", opt=WRITE, status_code=201, summary="Create an integration")
    async def create_integration(self, request: Request, data: JSONBody[Any]) -> dict[str, Any]:
        """`{name, kind, description?}`; then add its providers and set its failover settings."""
        org_id = principal_of(request).org_id
        integration_id = await setup.create_integration(org_id, data)
        [one] = await services.overview(org_id, integration_id)
        return one

    @patch("/{integration_id:uuid}", opt=WRITE, summary="Rename or describe an integration")
    async def update_integration(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[Any]
    ) -> dict[str, Any]:
        org_id = principal_of(request).org_id
        await setup.update_integration(org_id, integration_id, data)
        [one] = await services.overview(org_id, integration_id)
        return one

    @delete("/{integration_id:uuid}", opt=WRITE, summary="Delete an integration with its providers and history")
    async def delete_integration(self, request: Request, integration_id: FromPath[uuid.UUID]) -> None:
        await setup.delete_integration(principal_of(request).org_id, integration_id)

    @post("/{integration_id:uuid}/providers", opt=WRITE, status_code=201, summary="Add a provider")
    async def create_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[Any]
    ) -> dict[str, Any]:
        """`{name, endpoint_url, health_url, kind?, priority?, credentials? | oauth_connection_id?, enabled?,
        rate_limit_per_hour?}`. Credentials are write-only: the answer says only whether they are set."""
        org_id = principal_of(request).org_id
        provider_id = await setup.create_provider(org_id, integration_id, data)
        return await setup.provider(org_id, integration_id, provider_id)

    @patch("/{integration_id:uuid}/providers/{provider_id:uuid}", opt=WRITE, summary="Change a provider")
    async def update_provider(
        self,
        request: Request,
        integration_id: FromPath[uuid.UUID],
        provider_id: FromPath[uuid.UUID],
        data: JSONBody[Any],
    ) -> dict[str, Any]:
        """Absent fields stay; `credentials: null` removes them. Disabling the active provider moves
        traffic to the next healthy one (an audited manual failover)."""
        principal = principal_of(request)
        await setup.update_provider(principal.org_id, integration_id, provider_id, data, principal.actor)
        return await setup.provider(principal.org_id, integration_id, provider_id)

    @delete("/{integration_id:uuid}/providers/{provider_id:uuid}", opt=WRITE, summary="Remove a provider")
    async def delete_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> None:
        principal = principal_of(request)
        await setup.delete_provider(principal.org_id, integration_id, provider_id, principal.actor)

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
        """`{"reason": "...", "to_provider_id"?: "..."}`: traffic moves to the chosen provider, or else to the
        next healthy one; moving it to the primary is a failback. The switch is audited."""
        if not isinstance(data, dict) or not isinstance(data.get("reason"), str):
            raise Problem(422, 'Send {"reason": "..."}: why you are failing over.')
        target = data.get("to_provider_id")
        target_id = fields.as_uuid(target) if target is not None else None
        if target is not None and target_id is None:
            raise Problem(422, "to_provider_id is a provider's id.", [{"field": "to_provider_id", "message": "an id"}])
        principal = principal_of(request)
        return await services.trigger_failover(
            principal.org_id, integration_id, data["reason"][:1000], principal.actor, target_id
        )


ROUTES = [IntegrationsApi]
