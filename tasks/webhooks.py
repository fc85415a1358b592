"""Webhook actors: thin, they pass ids to the engine. Retries are the middleware's decision."""

from __future__ import annotations

import dramatiq

from app.core import queue
from app.webhooks import bulk, delivery, schedule


# max_retries: Dramatiq's own retries cover only unexpected errors (a database restart mid-attempt);
# the delivery schedule itself is DeliveryBackoff's, driven by the delivery's retry policy.
@dramatiq.actor(
    queue_name="deliveries",
    max_retries=queue.DELIVERY_RETRIES,
    min_backoff=1000,
    max_backoff=30_000,
    time_limit=120_000,
)
async def deliver_batch(
    delivery_ids: list[str], message_id: str | None = None, webhook_id: str | None = None
) -> list[schedule.RetryRequest]:
    """Dispatch's message (app.webhooks.dispatch): deliveries of one webhook, claimed for this message,
    sent concurrently and each recorded as it completes. (Without message_id: a message of an older
    version, which claims nothing; its deliveries are dispatched again.)"""
    return await delivery.deliver_many(delivery_ids, message_id, webhook_id)


@dramatiq.actor(queue_name="deliveries", max_retries=0)
async def deliver_webhook(delivery_id: str) -> None:
    """An older version's single-delivery message, still in Redis after an upgrade: its delivery is held
    and dispatch sends it in a message of its own, so this one has nothing to do."""


@dramatiq.actor(queue_name="bulk", max_retries=5, time_limit=3_600_000)
async def run_bulk_job(job_id: str) -> None:
    await bulk.run_bulk(job_id)
