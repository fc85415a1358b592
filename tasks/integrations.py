"""Integration actors: a provider's health check (the scheduler enqueues those that are due), and a call
to a provider in the background (app.integrations.calls.enqueue_call enqueues those)."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

import dramatiq

from app.core import queue
from app.core.backoff import Backoff
from app.core.problems import NotFound
from app.integrations import health
from app.integrations.calls import CallFailed, Deferred, NoHealthyProvider, Rejected, call_integration

log = logging.getLogger("intime.integrations")


@dramatiq.actor(queue_name="integrations", max_retries=0, time_limit=30_000)
async def run_health_check(provider_id: str) -> None:
    await health.check_provider(uuid.UUID(provider_id))


# A failing call is tried again after 5 s, doubling to 10 min, 20 times: about two hours, long enough to
# outlast a provider's outage or a breaker's cooldown. Deferrals (waiting for a rate-limit slot or a
# provider's Retry-After) are not failures and do not count against those; 500 of them (days of a
# provider answering 429) end the call too.
MAX_FAILURES = 20
MAX_DEFERRALS = 500
# With jitter (app.core.backoff): calls that failed together, in one outage, do not all come back together.
CALL_BACKOFF = Backoff(first=5.0, cap=600.0)


class CallAbandoned(Exception):
    """A call that failed or waited too often; Dramatiq keeps it in its dead-letter set."""


async def attempt_call(
    integration_id: str,
    operation: str,
    payload: dict[str, Any],
    call_id: str,
    deferrals: int = 0,
    reserved_for: str | None = None,
    failures: int = 0,
) -> int | None:
    """One attempt at a call; returns the delay (ms) of the next attempt it sent, or None when done.

    - Deferred (over the rate limit, or the provider said 429): the same call is sent again for its
      booked slot; `reserved_for` names the provider the slot was booked at, for that one attempt.
    - Failed (no answer, 5xx, no usable provider): sent again after a backoff, with no slot booked.
    - Refused (Rejected, a 4xx): raised, and not tried again.
    - The integration is gone: dropped, there is nothing left to call.

    Each next attempt is a new message sent before this one is acknowledged: a crash in between
    repeats the call (under the same Idempotency-Key) rather than losing it."""

    async def again(deferrals: int, reserved_for: str | None, failures: int, delay_ms: int) -> None:
        args = (integration_id, operation, payload, call_id, deferrals, reserved_for, failures)
        await queue.asend("call_provider", *args, delay_ms=delay_ms)

    try:
        await call_integration(
            uuid.UUID(integration_id),
            operation,
            payload,
            idempotency_key=call_id,
            reserved_for=uuid.UUID(reserved_for) if reserved_for else None,
        )
    except Deferred as deferred:
        if deferrals >= MAX_DEFERRALS:
            log.error("call %s to integration %s given up: deferred %d times", call_id, integration_id, deferrals)
            raise CallAbandoned(f"call {call_id}: deferred {deferrals} times; last: {deferred}") from None
        delay_ms = math.ceil(deferred.retry_after * 1000)
        booked = str(deferred.reserved_for) if deferred.reserved_for else None
        await again(deferrals + 1, booked, failures, delay_ms)
        log.info("call %s to integration %s deferred %d ms: %s", call_id, integration_id, delay_ms, deferred)
        return delay_ms
    except Rejected as refused:
        # The provider's reason ("invalid phone number") is what the caller needs: the first 300
        # characters of its answer, which is about our request.
        log.error("call %s to integration %s not retried: %s: %.300s", call_id, integration_id, refused, refused.body)
        raise
    except NotFound:
        log.warning("call %s to integration %s dropped: the integration was deleted", call_id, integration_id)
        return None
    except Exception as error:
        # A failed call (no answer, 5xx, 401/403, no usable provider), or the unexpected (the database
        # restarting): tried again as a new message, which books no slot: one booked for this attempt
        # may have been used already.
        if failures + 1 > MAX_FAILURES:
            log.error(
                "call %s to integration %s given up: %d failures; last: %s",
                call_id,
                integration_id,
                failures + 1,
                error,
            )
            raise CallAbandoned(f"call {call_id}: failed {failures + 1} times; last: {error}") from None
        delay_ms = CALL_BACKOFF.ms(failures + 1)
        await again(deferrals, None, failures + 1, delay_ms)
        expected = isinstance(error, NoHealthyProvider | CallFailed)
        (log.warning if expected else log.exception)(
            "call %s to integration %s failed, tried again in %d ms: %s", call_id, integration_id, delay_ms, error
        )
        return delay_ms
    return None


# The call's failures and deferrals are counted by attempt_call, whose next attempts are new messages;
# Dramatiq's own retries cover only a next attempt that could not be sent (Redis away).
@dramatiq.actor(
    queue_name="integrations",
    max_retries=10,
    min_backoff=5_000,
    max_backoff=600_000,
    time_limit=120_000,
    throws=(Rejected, CallAbandoned),
)
async def call_provider(
    integration_id: str,
    operation: str,
    payload: dict[str, Any],
    call_id: str,
    deferrals: int = 0,
    reserved_for: str | None = None,
    failures: int = 0,
) -> None:
    """`calls.call_integration` in the background; `call_id` is the Idempotency-Key of every attempt.

    Over the rate limit the call is deferred, not dropped: sent again for the slot booked for it. A
    provider's 429 defers it for as long as the provider's Retry-After says. A failing call is tried
    again with backoff (`MAX_FAILURES`). A call the provider refused with a 4xx (Rejected: sending it
    again would not help), or one that failed or waited too often, goes to Dramatiq's dead-letter set
    (`intime:integrations.XQ` in Redis, kept 7 days) and the worker's log says why."""
    await attempt_call(integration_id, operation, payload, call_id, deferrals, reserved_for, failures)
