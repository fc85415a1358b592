"""Webhook actors: thin, they load an id and call the engine. Retries are the middleware's decision."""

from __future__ import annotations

import dramatiq

from app.webhooks import bulk, delivery


# max_retries: Dramatiq's own retries cover only unexpected errors (a database restart mid-attempt);
# the delivery schedule itself is DeliveryBackoff's, driven by the delivery's retry policy.
@dramatiq.actor(queue_name="deliveries", max_retries=5, min_backoff=1000, max_backoff=30_000, time_limit=120_000)
async def deliver_webhook(delivery_id: str) -> delivery.RetryRequest | None:
    return await delivery.deliver(delivery_id)


@dramatiq.actor(queue_name="deliveries", max_retries=5, min_backoff=1000, max_backoff=30_000, time_limit=120_000)
async def deliver_batch(delivery_ids: list[str]) -> list[delivery.RetryRequest]:
    """Fan-out's message: several deliveries claimed, sent concurrently and recorded together."""
    return await delivery.deliver_many(delivery_ids)


@dramatiq.actor(queue_name="bulk", max_retries=5, time_limit=3_600_000)
async def run_bulk_job(job_id: str) -> None:
    await bulk.run_bulk(job_id)
