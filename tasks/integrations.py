"""Integration actors: a provider's health check (the scheduler enqueues those that are due), and a call
to a provider in the background (app.integrations.calls.enqueue_call records those and enqueues them;
app.integrations.background makes each attempt)."""

from __future__ import annotations

import uuid
from typing import Any

import dramatiq

from app.integrations import background, health


@dramatiq.actor(queue_name="integrations", max_retries=0, time_limit=30_000)
async def run_health_check(provider_id: str) -> None:
    await health.check_provider(uuid.UUID(provider_id))


# The call's failures and deferrals are counted on its row (integration_calls), whose next attempts are
# new messages; Dramatiq's own retries cover only an attempt that could not start or record (the
# database away). The time limit is below the row's lease (call_rows.LEASE_SECONDS), so the sweep never
# takes a call from a worker that is still making it.
@dramatiq.actor(queue_name="integrations", max_retries=10, min_backoff=5_000, max_backoff=600_000, time_limit=120_000)
async def call_provider(row_id: str, *legacy: Any) -> None:
    """`calls.call_integration` in the background for the integration_calls row `row_id`; its `call_id`
    is the Idempotency-Key of every attempt.

    Over the rate limit the call is deferred, not dropped: sent again for the slot booked for it. A
    provider's 429 defers it for as long as the provider's Retry-After says. A failing call is tried
    again with backoff (`call_rows.MAX_FAILURES`). A call the provider refused with a 4xx (sending it
    again would not help), or one that failed or waited too often, ends `rejected` or `abandoned`, its
    row keeping the last error, and the worker's log says why.

    `legacy`: a message sent before calls were rows carried the whole call
    (integration_id, operation, payload, call_id, deferrals, reserved_for, failures); it becomes a row."""
    if legacy:
        adopted = await background.adopt(row_id, *legacy)
        if adopted is None:
            return
        row_id = str(adopted)
    await background.attempt_call(row_id)
