"""The webhooks part of the JSON API (CONTRACT "JSON API"): webhooks, deliveries, retry config, DLQ, jobs."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody

from app.accounts.auth import principal_of
from app.core import paging
from app.core.apidoc import errors
from app.core.problems import Problem
from app.webhooks import (
    bulk,
    dlq,
    operations,
    queries,
    retry,
    retry_config,
    secrets,
    services,
    signing,
    stats,
    validation,
)
from app.webhooks.tables import Webhook

READ = {"scopes": ["webhooks:read"]}
WRITE = {"scopes": ["webhooks:write"]}
DLQ_WRITE = {"scopes": ["dlq:write"]}


def webhook_out(webhook: Webhook, secret: str | None = None) -> dict[str, Any]:
    out = {
        "id": str(webhook.id),
        "name": webhook.name,
        "url": webhook.url,
        "description": webhook.description,
        "event_patterns": webhook.event_patterns,
        "enabled": webhook.enabled,
        "disabled_reason": webhook.disabled_reason,
        "disabled_at": webhook.disabled_at,
        "timeout_seconds": webhook.timeout_seconds,
        "headers": secrets.shown_headers(webhook),
        "retry_policy": _json(webhook.retry_policy),
        "consecutive_failures": webhook.consecutive_failures,
        "secret_rotating_until": webhook.previous_secret_expires_at
        if webhook.previous_secret_expires_at and webhook.previous_secret_expires_at > datetime.now().astimezone()
        else None,
        "created_at": webhook.created_at,
        "updated_at": webhook.updated_at,
    }
    if secret is not None:
        out["secret"] = secret
    return out


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _invalid(error: validation.WebhookInvalid | retry.PolicyError) -> Problem:
    errors = [{"field": field, "message": message} for field, message in error.errors.items()]
    return Problem(
        422, "The webhook is not valid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors
    )


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Problem(422, "The request body must be a JSON object.")
    return data


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

    @get("/", opt=READ, summary="List webhooks, oldest first")
    async def list_webhooks(
        self, request: Request, limit: FromQuery[int | None] = None, cursor: FromQuery[str | None] = None
    ) -> dict[str, Any]:
        size, after = paging.request_window(limit, cursor, 100)
        rows = await services.list_webhooks(principal_of(request).org_id, after=after, limit=size + 1)
        hooks, next_cursor = paging.cut(rows, size, lambda w: (w.created_at, w.id))
        return {"items": [webhook_out(w) for w in hooks], "next_cursor": next_cursor}

    @post("/", opt=WRITE, status_code=201, summary="Create a webhook; the response carries its secret, once")
    async def create(self, request: Request, data: JSONBody[Any]) -> dict[str, Any]:
        try:
            webhook, secret = await services.create_webhook(principal_of(request).org_id, _object(data))
        except validation.WebhookInvalid as error:
            raise _invalid(error) from None
        return webhook_out(webhook, secret)

    @get("/{webhook_id:str}", opt=READ, summary="One webhook")
    async def get_one(self, request: Request, webhook_id: FromPath[str]) -> dict[str, Any]:
        return webhook_out(await services.get_webhook(principal_of(request).org_id, webhook_id))

    @patch("/{webhook_id:str}", opt=WRITE, summary="Change a webhook (only the fields given)")
    async def update(self, request: Request, webhook_id: FromPath[str], data: JSONBody[Any]) -> dict[str, Any]:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        try:
            return webhook_out(await services.update_webhook(principal_of(request).org_id, webhook.id, _object(data)))
        except validation.WebhookInvalid as error:
            raise _invalid(error) from None

    @delete("/{webhook_id:str}", opt=WRITE, status_code=204, summary="Delete a webhook (its history is kept)")
    async def remove(self, request: Request, webhook_id: FromPath[str]) -> None:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        await services.delete_webhook(principal_of(request).org_id, webhook.id)

    @post("/{webhook_id:str}/test", opt=WRITE, status_code=202, summary="Send a webhook.test event to it")
    async def test(self, request: Request, webhook_id: FromPath[str]) -> dict[str, Any]:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        delivery_id = await operations.send_test(principal_of(request).org_id, webhook.id)
        return {"delivery_id": str(delivery_id)}

    @post(
        "/{webhook_id:str}/rotate-secret",
        opt=WRITE,
        status_code=200,
        summary="New secret; the old one stays valid (and signs too) for 24 h",
    )
    async def rotate(self, request: Request, webhook_id: FromPath[str]) -> dict[str, Any]:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        secret = await secrets.rotate_secret(webhook)
        return {
            "secret": secret,
            "previous_valid_until": datetime.now().astimezone() + secrets.ROTATION_OVERLAP,
            "hint": signing.mask(secret),
        }

    @get("/{webhook_id:str}/stats", opt=READ, summary="Attempts, success rate and latency, in total and per hour")
    async def stats(
        self, request: Request, webhook_id: FromPath[str], window: FromQuery[str] = "24h"
    ) -> dict[str, Any]:
        """p50 / p95 are estimated from a latency histogram (buckets from 10 ms to 60 s)."""
        return await _stats(await services.get_webhook(principal_of(request).org_id, webhook_id), window)

    @get("/{webhook_id:str}/deliveries", opt=READ, summary="A webhook's deliveries, newest first")
    async def deliveries(
        self,
        request: Request,
        webhook_id: FromPath[str],
        status: FromQuery[str | None] = None,
        event_type: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
    ) -> dict[str, Any]:
        """Filters: status, event_type, since, until; `q` finds a delivery or event by its id."""
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        return _page(
            await _query(
                queries.list_deliveries(
                    principal_of(request).org_id,
                    webhook.id,
                    status=status,
                    event_type=event_type,
                    since=since,
                    until=until,
                    limit=limit,
                    cursor=cursor,
                    search=q,
                )
            )
        )


async def _stats(webhook: Webhook, window: str) -> dict[str, Any]:
    hours = {"24h": 24, "7d": 168}.get(window)
    if hours is None:
        raise Problem(422, "window is 24h or 7d.", [{"field": "window", "message": "24h or 7d"}])
    totals, series = await stats.load(webhook.id, hours)
    return {
        "window": window,
        "deliveries": totals.deliveries,
        "attempts": totals.attempts,
        "successes": totals.successes,
        "failures": totals.failures,
        "success_rate": totals.success_rate,
        "p50_ms": totals.p50_ms,
        "p95_ms": totals.p95_ms,
        "hourly": [
            {"hour": h.hour, "successes": h.successes, "failures": h.failures, "p50_ms": h.p50_ms, "p95_ms": h.p95_ms}
            for h in series
        ],
    }


class DeliveriesApi(Controller):
    path = "/deliveries"
    tags = ["deliveries"]

    @get("/{delivery_id:str}", opt=READ, summary="A delivery with every attempt's request and response")
    async def get_one(self, request: Request, delivery_id: FromPath[str]) -> dict[str, Any]:
        found = await queries.get_delivery(principal_of(request).org_id, delivery_id)
        if found is None:
            raise NotFoundException("No such delivery in this organisation.")
        return found

    @post("/{delivery_id:str}/replay", opt=WRITE, status_code=202, summary="Send it again (same delivery id)")
    async def replay(self, request: Request, delivery_id: FromPath[str]) -> dict[str, Any]:
        await _operation(operations.replay(principal_of(request).org_id, delivery_id))
        return {"delivery_id": delivery_id, "status": "pending"}


async def _operation(coro):
    try:
        return await coro
    except operations.Conflict as error:
        raise Problem(409, str(error)) from None


class RetryConfigApi(Controller):
    path = "/retry-config"
    tags = ["retry"]

    @get("/", opt=READ, summary="The organisation's default retry policy")
    async def get_config(self, request: Request) -> dict[str, Any]:
        return (await retry_config.org_policy(principal_of(request).org_id)).as_dict()

    @put("/", opt=WRITE, summary="Replace the organisation's default retry policy")
    async def put_config(self, request: Request, data: JSONBody[Any]) -> dict[str, Any]:
        try:
            return (await retry_config.set_org_policy(principal_of(request).org_id, _object(data))).as_dict()
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
