"""Webhooks and the organisation's retry config in the JSON API (CONTRACT "JSON API")."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import Body, FromPath, FromQuery, JSONBody, QueryParameter

from app.accounts.auth import principal_of
from app.core import paging, times
from app.core.apidoc import errors
from app.core.problems import Problem
from app.webhooks import (
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
from app.webhooks.api.common import (
    CHECKED,
    ONE,
    ONE_CHECKED,
    READ,
    WRITE,
    Limit,
    out,
    read_query,
    sent_fields,
)
from app.webhooks.tables import DeliveryStatus, Webhook

# The body is decoded loosely (see app.webhooks.schemas); the document still says what is required.
WEBHOOK_BODY = Body(schema_extra={"required": schemas.WEBHOOK_REQUIRED})
StatusFilter = Annotated[str | None, QueryParameter(schema_extra={"enum": [s.value for s in DeliveryStatus]})]
Window = Annotated[str, QueryParameter(schema_extra={"enum": ["24h", "7d"]})]
WINDOW_HOURS = {"24h": 24, "7d": 168}


def webhook_out(webhook: Webhook) -> schemas.WebhookOut:
    return out(schemas.WebhookOut, webhook, **_shown(webhook))


def _shown(webhook: Webhook) -> dict[str, Any]:
    """What a webhook shows that its row does not hold as is: masked headers, the parsed policy and
    whether a rotation is still running."""
    policy = json.loads(webhook.retry_policy) if isinstance(webhook.retry_policy, str) else webhook.retry_policy
    rotating = webhook.previous_secret_expires_at
    return {
        "headers": secrets.shown_headers(webhook),
        "retry_policy": None if policy is None else out(schemas.RetryPolicy, policy),
        "secret_rotating_until": rotating if rotating and rotating > datetime.now().astimezone() else None,
    }


def _invalid(error: validation.WebhookInvalid | retry.PolicyError) -> Problem:
    errors = [{"field": field, "message": message} for field, message in error.errors.items()]
    return Problem(
        422, "The webhook is not valid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors
    )


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
            webhook, secret = await services.create_webhook(principal_of(request).org_id, await sent_fields(request))
        except validation.WebhookInvalid as error:
            raise _invalid(error) from None
        return out(schemas.WebhookCreated, webhook, **_shown(webhook), secret=secret)

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
            return webhook_out(await services.update_webhook(org_id, webhook.id, await sent_fields(request)))
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
        page = await read_query(
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
            items=[out(schemas.DeliveryOut, row) for row in page.items], next_cursor=page.next_cursor
        )


async def _stats(webhook: Webhook, window: str) -> schemas.WebhookStats:
    hours = WINDOW_HOURS.get(window)
    if hours is None:
        raise Problem(422, "window is 24h or 7d.", [{"field": "window", "message": "24h or 7d"}])
    totals, series = await stats.load(webhook.id, hours)
    hourly = [out(schemas.HourStats, hour) for hour in series]
    return out(schemas.WebhookStats, totals, window=window, hourly=hourly)


class RetryConfigApi(Controller):
    path = "/retry-config"
    tags = ["retry"]

    @get("/", opt=READ, summary="The organisation's default retry policy", responses=errors())
    async def get_config(self, request: Request) -> schemas.RetryPolicy:
        return out(schemas.RetryPolicy, await retry_config.org_policy(principal_of(request).org_id))

    @put("/", opt=WRITE, summary="Replace the organisation's default retry policy", responses=CHECKED)
    async def put_config(self, request: Request, data: JSONBody[schemas.RetryPolicyIn]) -> schemas.RetryPolicy:
        try:
            return out(
                schemas.RetryPolicy,
                await retry_config.set_org_policy(principal_of(request).org_id, await request.json()),
            )
        except retry.PolicyError as error:
            raise Problem(
                422,
                f"The retry policy is not valid: {error}",
                [{"field": f, "message": m} for f, m in error.errors.items()],
            ) from None
