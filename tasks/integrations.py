"""Integration actors: a provider's health check (the scheduler enqueues those that are due), and a call
to a provider in the background (app.integrations.calls.enqueue_call enqueues those)."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import dramatiq

from app.core import queue
from app.integrations import services

log = logging.getLogger("intime.integrations")


@dramatiq.actor(queue_name="integrations", max_retries=0, time_limit=30_000)
async def run_health_check(provider_id: str) -> None:
    await services.check_provider(uuid.UUID(provider_id))


async def attempt_call(
    integration_id: str,
    operation: str,
    payload: dict[str, Any],
    call_id: str,
    deferrals: int = 0,
    reserved_for: str | None = None,
) -> int | None:
    """One attempt at a call. Deferred (over the rate limit, or the provider said 429), the same call is
    sent again for its booked slot and the delay (ms) is returned; a failure raises `dramatiq.Retry`; a
    call the provider refused (Rejected) is raised as it is and not retried; a deleted integration's
    call is dropped (there is nothing left to call)."""
    try:
        await services.call_integration(
            uuid.UUID(integration_id),
            operation,
            payload,
            idempotency_key=call_id,
            reserved_for=uuid.UUID(reserved_for) if reserved_for else None,
        )
    except services.Deferred as deferred:
        # Sent before this message is acknowledged: a crash in between redelivers the call (the provider
        # may then see it twice, under one Idempotency-Key) rather than losing it. A new message, not a
        # Dramatiq retry: waiting for the limit is not a failure and must not use up the call's retries.
        delay_ms = math.ceil(deferred.retry_after * 1000)
        booked = str(deferred.reserved_for) if deferred.reserved_for else None
        args = (integration_id, operation, payload, call_id, deferrals + 1, booked)
        await queue.asend("call_provider", *args, delay_ms=delay_ms)
        log.info("call %s to integration %s deferred %d ms: %s", call_id, integration_id, delay_ms, deferred)
        return delay_ms
    except services.Rejected as refused:
        log.error("call %s to integration %s, not retried: %s: %s", call_id, integration_id, refused, refused.body)
        raise
    except (services.NoHealthyProvider, services.CallFailed) as error:
        log.warning("call %s to integration %s failed, to be retried: %s", call_id, integration_id, error)
        raise dramatiq.Retry(str(error)) from error
    except services.NotFound:
        log.warning("call %s to integration %s dropped: the integration was deleted", call_id, integration_id)
    return None


@dramatiq.actor(
    queue_name="integrations",
    max_retries=20,
    min_backoff=5_000,
    max_backoff=600_000,
    time_limit=120_000,
    throws=(services.Rejected,),
)
async def call_provider(
    integration_id: str,
    operation: str,
    payload: dict[str, Any],
    call_id: str,
    deferrals: int = 0,
    reserved_for: str | None = None,
) -> None:
    """`services.call_integration` in the background; `call_id` is the Idempotency-Key of every attempt.

    Over the rate limit the call is deferred: sent again for the slot booked for it (`reserved_for`
    names the provider, so the next attempt does not take a second token), never dropped. A
    provider's 429 defers it too, for as long as the provider's Retry-After says.
    A deferral is a new message, so it uses none of the call's retries; the new message's count does
    start from zero (an actor cannot read its own message's count without Dramatiq's CurrentMessage
    middleware, which the broker does not install).

    A failing call (no provider can take calls, or the provider answered an error or not at all) is
    retried by Dramatiq's Retries middleware, 5 s doubling to 10 min: 20 retries span about two hours,
    long enough to outlast a provider's outage or a breaker's cooldown. One that exhausts them goes to
    Dramatiq's dead-letter set (`intime:integrations.XQ` in Redis, kept 7 days), as does at once a call
    the provider refused with a 4xx (Rejected: sending it again would not help)."""
    await attempt_call(integration_id, operation, payload, call_id, deferrals, reserved_for)
