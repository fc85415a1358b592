"""The webhooks part of the JSON API (CONTRACT "JSON API"): webhooks, deliveries, retry config, DLQ, jobs."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.exceptions import NotFoundException
from litestar.params import Body, FromPath, FromQuery, JSONBody, QueryParameter

from app.accounts.auth import principal_of
from app.core import paging, times
from app.core.apidoc import errors
from app.core.problems import Problem
from app.webhooks import (
    bulk,
    dlq,
    operations,
    queries,
    retry,
    retry_config,
    schemas,
    secrets,
    services,
    signing,
    stats,
    validation,
)
from app.webhooks.tables import DeliveryStatus, Webhook

READ = {"scopes": ["webhooks:read"]}
WRITE = {"scopes": ["webhooks:write"]}
DLQ_WRITE = {"scopes": ["dlq:write"]}
# The body is decoded loosely (see app.webhooks.schemas); the document still says what is required.
WEBHOOK_BODY = Body(schema_extra={"required": schemas.WEBHOOK_REQUIRED})
S = TypeVar("S", bound=msgspec.Struct)
# Query parameters document their bounds and choices without Litestar enforcing them: paging and
# queries refuse a bad value with the message (and field) clients already get.
Limit = Annotated[int | None, QueryParameter(schema_extra={"minimum": 1, "maximum": paging.MAX_LIMIT})]
StatusFilter = Annotated[str | None, QueryParameter(schema_extra={"enum": [s.value for s in DeliveryStatus]})]
Window = Annotated[str, QueryParameter(schema_extra={"enum": ["24h", "7d"]})]
WINDOW_HOURS = {"24h": 24, "7d": 168}
# The problems a route names by what it takes: a body or query (422), a resource in its path (404).
CHECKED, ONE, ONE_CHECKED = errors(400, 422), errors(400, 404), errors(400, 404, 422)


def _out(struct: type[S], source: Any, **given: Any) -> S:
    """A response Struct from a row (a dict) or an object, `given` taking precedence; the values go
    out as read, with no second validation on the way."""
    read = source.__getitem__ if isinstance(source, dict) else partial(getattr, source)
    return struct(**{name: given[name] if name in given else read(name) for name in struct.__struct_fields__})


def webhook_out(webhook: Webhook) -> schemas.WebhookOut:
    return _out(schemas.WebhookOut, webhook, **_shown(webhook))


def _shown(webhook: Webhook) -> dict[str, Any]:
    """What a webhook shows that its row does not hold as is: masked headers, the parsed policy and
    whether a rotation is still running."""
    policy = json.loads(webhook.retry_policy) if isinstance(webhook.retry_policy, str) else webhook.retry_policy
    rotating = webhook.previous_secret_expires_at
    return {
        "headers": secrets.shown_headers(webhook),
        "retry_policy": None if policy is None else _out(schemas.RetryPolicy, policy),
        "secret_rotating_until": rotating if rotating and rotating > datetime.now().astimezone() else None,
    }


def _invalid(error: validation.WebhookInvalid | retry.PolicyError) -> Problem:
    errors = [{"field": field, "message": message} for field, message in error.errors.items()]
    return Problem(
        422, "The webhook is not valid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors
    )


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Problem(422, "The request body must be a JSON object.")
    return data


async def _sent(request: Request) -> dict[str, Any]:
    """The body's fields as sent, unknown ones included: the service refuses those by name, and a
    PATCH changes exactly the fields present (an explicit null is not an absent field)."""
    return _object(await request.json())


def _page(page: queries.Page) -> dict[str, Any]:
    return {"items": page.items, "next_cursor": page.next_cursor}


async def _query(coro):
    try:
        return await coro
    except queries.BadQuery as error:
        raise Problem(422, str(error), [{"field": error.field, "message": str(error)}]) from None


class WebhooksApi(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @get("/", opt=READ, summary="List webhooks, oldest first", responses=CHECKED)
    async def list_webhooks(
        self,
        request: Request,
        limit: Limit = None,
        cursor: FromQuery[str | None] = None,
    ) -> schemas.WebhookPage:
        size, after = paging.request_window(limit, cursor, 100)
        rows = await services.list_webhooks(principal_of(request).org_id, after=after, limit=size + 1)
        hooks, next_cursor = paging.cut(rows, size, lambda w: (w.created_at, w.id))
        return schemas.WebhookPage(items=[webhook_out(w) for w in hooks], next_cursor=next_cursor)

    @post(
        "/",
        opt=WRITE,
        status_code=201,
        summary="Create a webhook; the response carries its secret, once",
        responses=CHECKED,
    )
    async def create(
        self, request: Request, data: Annotated[schemas.WebhookIn, WEBHOOK_BODY]
    ) -> schemas.WebhookCreated:
        try:
            webhook, secret = await services.create_webhook(principal_of(request).org_id, await _sent(request))
        except validation.WebhookInvalid as error:
            raise _invalid(error) from None
        return _out(schemas.WebhookCreated, webhook, **_shown(webhook), secret=secret)

    @get("/{webhook_id:uuid}", opt=READ, summary="One webhook", responses=ONE)
    async def get_one(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> schemas.WebhookOut:
        return webhook_out(await services.get_webhook(principal_of(request).org_id, webhook_id))

    @patch(
        "/{webhook_id:uuid}",
        opt=WRITE,
        summary="Change a webhook (only the fields given)",
        responses=ONE_CHECKED,
    )
    async def update(
        self, request: Request, webhook_id: FromPath[uuid.UUID], data: JSONBody[schemas.WebhookPatch]
    ) -> schemas.WebhookOut:
        org_id = principal_of(request).org_id
        webhook = await services.get_webhook(org_id, webhook_id)
        try:
            return webhook_out(await services.update_webhook(org_id, webhook.id, await _sent(request)))
        except validation.WebhookInvalid as error:
            raise _invalid(error) from None

    @delete(
        "/{webhook_id:uuid}",
        opt=WRITE,
        status_code=204,
        summary="Delete a webhook (its history is kept)",
        responses=ONE,
    )
    async def remove(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> None:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        await services.delete_webhook(principal_of(request).org_id, webhook.id)

    @post(
        "/{webhook_id:uuid}/test",
        opt=WRITE,
        status_code=202,
        summary="Send a webhook.test event to it",
        responses=ONE,
    )
    async def test(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> schemas.TestSent:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        return schemas.TestSent(delivery_id=await operations.send_test(principal_of(request).org_id, webhook.id))

    @post(
        "/{webhook_id:uuid}/rotate-secret",
        opt=WRITE,
        status_code=200,
        summary="New secret; the old one stays valid (and signs too) for 24 h",
        responses=ONE,
    )
    async def rotate(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> schemas.SecretRotated:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        secret = await secrets.rotate_secret(webhook)
        return schemas.SecretRotated(
            secret=secret,
            previous_valid_until=datetime.now().astimezone() + secrets.ROTATION_OVERLAP,
            hint=signing.mask(secret),
        )

    @get(
        "/{webhook_id:uuid}/stats",
        opt=READ,
        summary="Attempts, success rate and latency, in total and per hour",
        responses=ONE_CHECKED,
    )
    async def stats(
        self, request: Request, webhook_id: FromPath[uuid.UUID], window: Window = "24h"
    ) -> schemas.WebhookStats:
        """p50 / p95 are estimated from a latency histogram (buckets from 10 ms to 60 s)."""
        return await _stats(await services.get_webhook(principal_of(request).org_id, webhook_id), window)

    @get(
        "/{webhook_id:uuid}/deliveries",
        opt=READ,
        summary="A webhook's deliveries, newest first",
        responses=ONE_CHECKED,
    )
    async def deliveries(
        self,
        request: Request,
        webhook_id: FromPath[uuid.UUID],
        status: StatusFilter = None,
        event_type: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: Limit = None,
        cursor: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
    ) -> schemas.DeliveryPage:
        """Filters: status, event_type, since, until (without a zone: UTC); `q` finds a delivery or event
        by its id."""
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        page = await _query(
            queries.list_deliveries(
                principal_of(request).org_id,
                webhook.id,
                status=status,
                event_type=event_type,
                since=times.as_utc(since) if since else None,
                until=times.as_utc(until) if until else None,
                limit=limit,
                cursor=cursor,
                search=q,
            )
        )
        return schemas.DeliveryPage(
            items=[_out(schemas.DeliveryOut, row) for row in page.items], next_cursor=page.next_cursor
        )


async def _stats(webhook: Webhook, window: str) -> schemas.WebhookStats:
    hours = WINDOW_HOURS.get(window)
    if hours is None:
        raise Problem(422, "window is 24h or 7d.", [{"field": "window", "message": "24h or 7d"}])
    totals, series = await stats.load(webhook.id, hours)
    hourly = [_out(schemas.HourStats, hour) for hour in series]
    return _out(schemas.WebhookStats, totals, window=window, hourly=hourly)


class DeliveriesApi(Controller):
    path = "/deliveries"
    tags = ["deliveries"]

    @get(
        "/{delivery_id:uuid}",
        opt=READ,
        summary="A delivery with every attempt's request and response",
        responses=ONE,
    )
    async def get_one(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> schemas.DeliveryDetail:
        found = await queries.get_delivery(principal_of(request).org_id, delivery_id)
        if found is None:
            raise NotFoundException("No such delivery in this organisation.")
        attempts = [_out(schemas.AttemptOut, attempt) for attempt in found["attempts"]]
        return _out(schemas.DeliveryDetail, found, attempts=attempts)

    @post(
        "/{delivery_id:uuid}/replay",
        opt=WRITE,
        status_code=202,
        summary="Send it again (same delivery id)",
        responses=errors(400, 404, 409),
    )
    async def replay(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> schemas.Replayed:
        await _operation(operations.replay(principal_of(request).org_id, delivery_id))
        return schemas.Replayed(delivery_id=delivery_id, status="pending")


async def _operation(coro):
    try:
        return await coro
    except operations.Conflict as error:
        raise Problem(409, str(error)) from None


class RetryConfigApi(Controller):
    path = "/retry-config"
    tags = ["retry"]

    @get("/", opt=READ, summary="The organisation's default retry policy", responses=errors())
    async def get_config(self, request: Request) -> schemas.RetryPolicy:
        return _out(schemas.RetryPolicy, await retry_config.org_policy(principal_of(request).org_id))

    @put("/", opt=WRITE, summary="Replace the organisation's default retry policy", responses=CHECKED)
    async def put_config(self, request: Request, data: JSONBody[schemas.RetryPolicyIn]) -> schemas.RetryPolicy:
        try:
            return _out(
                schemas.RetryPolicy,
                await retry_config.set_org_policy(principal_of(request).org_id, await request.json()),
            )
        except retry.PolicyError as error:
            raise Problem(
                422,
                f"The retry policy is not valid: {error}",
                [{"field": f, "message": m} for f, m in error.errors.items()],
            ) from None


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
    ) -> dlq.DlqPage:
        """Filters: webhook_id, event_type, reason (why it is there), since and until (when it got there)."""
        dlq_filter = _filter(
            {"webhook_id": webhook_id, "event_type": event_type, "reason": reason, "since": since, "until": until}
        )
        return await _query(dlq.list_dlq(principal_of(request).org_id, dlq_filter, limit, cursor))

    @post(
        "/{delivery_id:uuid}/retry",
        opt=DLQ_WRITE,
        status_code=202,
        summary="Retry one dead-lettered delivery",
        responses=errors(400, 404, 409),
    )
    async def retry_one(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> dlq.RetryQueued:
        await _operation(operations.replay(principal_of(request).org_id, delivery_id, only_dlq=True))
        return dlq.RetryQueued(delivery_id=delivery_id)

    @delete(
        "/{delivery_id:uuid}",
        opt=DLQ_WRITE,
        status_code=204,
        summary="Clear one item (kept, marked, for audit)",
        responses=errors(400, 404, 409),
    )
    async def clear_one(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> None:
        principal = principal_of(request)
        await _operation(operations.clear(principal.org_id, delivery_id, principal.user_id))

    @post(
        "/retry",
        opt=DLQ_WRITE,
        status_code=202,
        summary="Retry everything the filter matches, as a job",
        responses=errors(400, 422),
    )
    async def retry_bulk(self, request: Request, data: JSONBody[dlq.FilterBody | None] = None) -> bulk.JobStarted:
        return await _bulk(request, "dlq_retry", data)

    @post(
        "/clear",
        opt=DLQ_WRITE,
        status_code=202,
        summary="Clear everything the filter matches, as a job",
        responses=errors(400, 422),
    )
    async def clear_bulk(self, request: Request, data: JSONBody[dlq.FilterBody | None] = None) -> bulk.JobStarted:
        return await _bulk(request, "dlq_clear", data)


async def _bulk(request: Request, kind: str, data: dlq.FilterBody | None) -> bulk.JobStarted:
    dlq_filter = _filter(msgspec.structs.asdict(data) if data is not None else {})
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


ROUTES = [WebhooksApi, DeliveriesApi, RetryConfigApi, DlqApi, JobsApi]
