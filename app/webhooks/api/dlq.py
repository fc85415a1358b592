"""The dead-letter queue and its bulk jobs in the JSON API: list, retry or clear one, or all a filter matches."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.core.problems import Problem
from app.webhooks import bulk, dlq, operations, schemas
from app.webhooks.api.common import DLQ_WRITE, READ, operation, read_query, sent_fields


def _filter(params: dict[str, Any]) -> dlq.DlqFilter:
    try:
        return dlq.parse_filter(params)
    except dlq.BadFilter as bad:
        field_errors = [{"field": bad.field, "message": bad.message}] if bad.field and bad.message else None
        raise Problem(422, str(bad), field_errors) from None


# Litestar documents a 400 for every route with parameters; errors(400, ...) makes it problem+json.
class DlqApi(Controller):
    path = "/dlq"
    tags = ["dlq"]

    @get("/", opt=READ, summary="Dead-lettered deliveries, newest first", responses=errors(400, 422))
    async def list_dlq(
        self,
        request: Request,
        webhook_id: FromQuery[str | None] = None,
        event_type: FromQuery[str | None] = None,
        reason: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> schemas.DeliveryPage:
        """Filters: webhook_id, event_type, reason (why it is there), since and until (when it got there)."""
        dlq_filter = _filter(
            {"webhook_id": webhook_id, "event_type": event_type, "reason": reason, "since": since, "until": until}
        )
        return await read_query(dlq.list_dlq(principal_of(request).org_id, dlq_filter, limit, cursor))

    @post(
        "/{delivery_id:uuid}/retry",
        opt=DLQ_WRITE,
        status_code=202,
        summary="Retry one dead-lettered delivery",
        responses=errors(400, 404, 409),
    )
    async def retry_one(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> schemas.Replayed:
        await operation(operations.replay(principal_of(request).org_id, delivery_id, only_dlq=True))
        return schemas.Replayed(delivery_id=delivery_id, status="pending")

    @delete(
        "/{delivery_id:uuid}",
        opt=DLQ_WRITE,
        status_code=204,
        summary="Clear one item (kept, marked, for audit)",
        responses=errors(400, 404, 409),
    )
    async def clear_one(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> None:
        principal = principal_of(request)
        await operation(operations.clear(principal.org_id, delivery_id, principal.user_id))

    @post(
        "/retry",
        opt=DLQ_WRITE,
        status_code=202,
        summary="Retry everything the filter matches, as a job",
        responses=errors(400, 422),
    )
    async def retry_bulk(self, request: Request, data: JSONBody[schemas.DlqFilterIn | None] = None) -> bulk.JobStarted:
        return await _bulk(request, "dlq_retry", data)

    @post(
        "/clear",
        opt=DLQ_WRITE,
        status_code=202,
        summary="Clear everything the filter matches, as a job",
        responses=errors(400, 422),
    )
    async def clear_bulk(self, request: Request, data: JSONBody[schemas.DlqFilterIn | None] = None) -> bulk.JobStarted:
        return await _bulk(request, "dlq_clear", data)


async def _bulk(request: Request, kind: str, data: schemas.DlqFilterIn | None) -> bulk.JobStarted:
    # The fields as sent, unknown ones included, for the parser to name.
    dlq_filter = _filter({} if data is None else await sent_fields(request))
    principal = principal_of(request)
    return bulk.JobStarted(await bulk.start_bulk(principal.org_id, kind, dlq_filter, principal.user_id))


class JobsApi(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @get("/{job_id:uuid}", opt=READ, summary="Progress of a bulk job", responses=errors(400, 404))
    async def get_job(self, request: Request, job_id: FromPath[uuid.UUID]) -> bulk.Job:
        job = await bulk.get_job(principal_of(request).org_id, job_id)
        if job is None:
            raise NotFoundException("No such job in this organisation.")
        return job
