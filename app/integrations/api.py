"""The integrations part of the JSON API (CONTRACT): integrations, their health, and failover.

Bodies arrive as sent (`JSONBody[Struct | Any]`, see app.integrations.schemas): the services check
every field and name each bad one in a single 422.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from app.accounts.auth import principal_of
from app.core import fields, paging
from app.core.apidoc import errors
from app.core.problems import Problem
from app.integrations import failover, queries, schemas, setup
from app.integrations.schemas import shaped

# Litestar documents a 400 for every route with a parameter (a request it cannot read); `errors(400, ...)`
# makes that a problem+json too. A malformed id in the path is a 404, a bad `limit` or `cursor` a 422.
READ = {"scopes": ["integrations:read"]}
WRITE = {"scopes": ["integrations:write"]}


class IntegrationsApi(Controller):
    path = "/integrations"
    tags = ["Integrations"]

    @get(
        "/",
        opt=READ,
        summary="Integrations with their providers, active provider and health, oldest first",
        responses=errors(400, 422),
    )
    async def list_integrations(
        self, request: Request, limit: FromQuery[int | None] = None, cursor: FromQuery[str | None] = None
    ) -> schemas.IntegrationList:
        """`limit` is 1-200 (default 50); `cursor` is the `next_cursor` of the page before."""
        size, after = paging.request_window(limit, cursor, 50)
        rows = await queries.overview(principal_of(request).org_id, after=after, limit=size + 1)
        items, next_cursor = paging.cut(rows, size, lambda i: (i["created_at"], uuid.UUID(i["id"])))
        return shaped({"items": items, "next_cursor": next_cursor}, schemas.IntegrationList)

    @post("/", opt=WRITE, status_code=201, summary="Create an integration", responses=errors(400, 422))
    async def create_integration(
        self, request: Request, data: JSONBody[schemas.NewIntegration | Any]
    ) -> schemas.IntegrationOut:
        """Then add its providers and set its failover settings."""
        org_id = principal_of(request).org_id
        integration_id = await setup.create_integration(org_id, data)
        [one] = await queries.overview(org_id, integration_id)
        return shaped(one, schemas.IntegrationOut)

    @patch(
        "/{integration_id:uuid}",
        opt=WRITE,
        summary="Rename or describe an integration",
        responses=errors(400, 404, 422),
    )
    async def update_integration(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[schemas.IntegrationChanges | Any]
    ) -> schemas.IntegrationOut:
        org_id = principal_of(request).org_id
        await setup.update_integration(org_id, integration_id, data)
        [one] = await queries.overview(org_id, integration_id)
        return shaped(one, schemas.IntegrationOut)

    @delete(
        "/{integration_id:uuid}",
        opt=WRITE,
        summary="Delete an integration with its providers and history",
        responses=errors(400, 404),
    )
    async def delete_integration(self, request: Request, integration_id: FromPath[uuid.UUID]) -> None:
        await setup.delete_integration(principal_of(request).org_id, integration_id)

    @post(
        "/{integration_id:uuid}/providers",
        opt=WRITE,
        status_code=201,
        summary="Add a provider",
        responses=errors(400, 404, 422),
    )
    async def create_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[schemas.NewProvider | Any]
    ) -> schemas.ProviderOut:
        """Credentials are write-only: the answer says only whether they are set."""
        org_id = principal_of(request).org_id
        provider_id = await setup.create_provider(org_id, integration_id, data)
        return shaped(await queries.provider(org_id, integration_id, provider_id), schemas.ProviderOut)

    @patch(
        "/{integration_id:uuid}/providers/{provider_id:uuid}",
        opt=WRITE,
        summary="Change a provider",
        responses=errors(400, 404, 422),
    )
    async def update_provider(
        self,
        request: Request,
        integration_id: FromPath[uuid.UUID],
        provider_id: FromPath[uuid.UUID],
        data: JSONBody[schemas.ProviderChanges | Any],
    ) -> schemas.ProviderOut:
        """Disabling the active provider moves traffic to the next healthy one (an audited manual failover)."""
        principal = principal_of(request)
        await setup.update_provider(principal.org_id, integration_id, provider_id, data, principal.actor)
        return shaped(await queries.provider(principal.org_id, integration_id, provider_id), schemas.ProviderOut)

    @delete(
        "/{integration_id:uuid}/providers/{provider_id:uuid}",
        opt=WRITE,
        summary="Remove a provider",
        responses=errors(400, 404),
    )
    async def delete_provider(
        self, request: Request, integration_id: FromPath[uuid.UUID], provider_id: FromPath[uuid.UUID]
    ) -> None:
        principal = principal_of(request)
        await setup.delete_provider(principal.org_id, integration_id, provider_id, principal.actor)

    @get(
        "/{integration_id:uuid}",
        opt=READ,
        summary="One integration, with its failover audit trail",
        responses=errors(400, 404),
    )
    async def get_integration(self, request: Request, integration_id: FromPath[uuid.UUID]) -> schemas.IntegrationDetail:
        org_id = principal_of(request).org_id
        [one] = await queries.overview(org_id, integration_id)
        detail = one | {"audit": await queries.audit_trail(org_id, integration_id)}
        return shaped(detail, schemas.IntegrationDetail)

    @get(
        "/{integration_id:uuid}/failover",
        opt=READ,
        summary="The failover and circuit-breaker settings",
        responses=errors(400, 404),
    )
    async def get_failover(self, request: Request, integration_id: FromPath[uuid.UUID]) -> schemas.FailoverConfig:
        [one] = await queries.overview(principal_of(request).org_id, integration_id)
        return shaped(one["failover"], schemas.FailoverConfig)

    @put(
        "/{integration_id:uuid}/failover",
        opt=WRITE,
        summary="Change the failover settings",
        responses=errors(400, 404, 422),
    )
    async def put_failover(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[schemas.FailoverSettings | Any]
    ) -> schemas.FailoverConfig:
        merged = await failover.update_failover(principal_of(request).org_id, integration_id, data)
        return shaped(merged, schemas.FailoverConfig)

    @post(
        "/{integration_id:uuid}/failover",
        opt=WRITE,
        status_code=200,
        summary="Trigger a failover",
        responses=errors(400, 404, 409, 422),
    )
    async def trigger(
        self, request: Request, integration_id: FromPath[uuid.UUID], data: JSONBody[schemas.TriggerFailover | Any]
    ) -> schemas.FailoverMoved:
        """Traffic moves to the chosen provider, or else to the next healthy one; moving it to the primary
        is a failback. The switch is audited."""
        if not isinstance(data, dict) or not isinstance(data.get("reason"), str):
            raise Problem(422, 'Send {"reason": "..."}: why you are failing over.')
        target = data.get("to_provider_id")
        target_id = fields.as_uuid(target) if target is not None else None
        if target is not None and target_id is None:
            raise Problem(422, "to_provider_id is a provider's id.", [{"field": "to_provider_id", "message": "an id"}])
        principal = principal_of(request)
        moved = await failover.trigger_failover(
            principal.org_id, integration_id, data["reason"][:1000], principal.actor, target_id
        )
        return shaped(moved, schemas.FailoverMoved)


ROUTES = [IntegrationsApi]
