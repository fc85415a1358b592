"""One attempt at a background call, as a worker makes it (tasks.integrations.call_provider): claim the
call's row, call the provider, record the outcome on the row and, when there is a next attempt, its
schedule, then wake a worker for it.

The row (integration_calls, app.integrations.call_rows) is the call's truth and the message only says
"look at this row": a message lost with Redis, or sent twice, changes nothing that the row does not
allow. The next attempt is recorded before its message is sent, so a crash in between leaves a due call
without a message, which the scheduler's sweep re-sends (under the same Idempotency-Key), never a call
that is forgotten.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from typing import Any

import asyncpg

from app.core import db
from app.core.problems import NotFound
from app.integrations import call_rows
from app.integrations.call_rows import CALL_BACKOFF, MAX_DEFERRALS, MAX_FAILURES
from app.integrations.calls import (
    CallFailed,
    Deferred,
    NoHealthyProvider,
    Rejected,
    call_integration,
    record_call,
    send_call,
)

log = logging.getLogger("intime.integrations")
# A message that came before its call was due is sent again for then, but never sooner than this: the
# machines' clocks may disagree by more than the claim's 500 ms, and a tight loop would not help.
EARLY_RESEND_MIN_MS = 1000


async def attempt_call(row_id: uuid.UUID | str) -> int | None:
    """One attempt at the call whose row this is; returns the delay (ms) of the next attempt it scheduled,
    or None when there is none (done, or not this message's to make).

    - Deferred (over the rate limit, or the provider said 429): `deferred` until its booked slot;
      `reserved_for` names the provider the slot was booked at, for that one attempt.
    - Failed (no answer, 5xx, no usable provider, the unexpected): `failed`, tried again after a
      backoff, with no slot booked (one booked for this attempt may have been used already).
    - Refused (Rejected, a 4xx): `rejected`, not tried again; the row keeps the provider's reason.
    - Failed or deferred too often: `abandoned`, with the last error.
    - The integration is gone: so is its row, there is nothing left to call."""
    row_id = uuid.UUID(str(row_id))
    async with db.connection() as conn:
        call = await conn.fetchrow(call_rows.CLAIM, row_id, call_rows.LEASE_SECONDS)
        if call is None:
            return await _not_claimed(conn, row_id)
    label = f"call {call['call_id']} to integration {call['integration_id']}"
    try:
        result = await call_integration(
            call["integration_id"],
            call["operation"],
            json.loads(call["payload"]),
            idempotency_key=call["call_id"],
            reserved_for=call["reserved_for"],
        )
    except Deferred as deferred:
        if call["deferrals"] >= MAX_DEFERRALS:
            log.error("%s given up: deferred %d times", label, call["deferrals"])
            await _end(call, "abandoned", f"deferred {call['deferrals']} times; last: {deferred}")
            return None
        delay_ms = max(1, math.ceil(deferred.retry_after * 1000))
        if await _again(call, "deferred", delay_ms, deferred.reserved_for, str(deferred)):
            log.info("%s deferred %d ms: %s", label, delay_ms, deferred)
        return delay_ms
    except Rejected as refused:
        # The provider's reason ("invalid phone number") is what the caller needs: the first 300
        # characters of its answer, which is about our request.
        log.error("%s not retried: %s: %.300s", label, refused, refused.body)
        await _end(call, "rejected", f"{refused}: {refused.body[:300]}", refused.status)
        return None
    except NotFound:
        log.warning("%s dropped: the integration was deleted", label)
        return None
    except Exception as error:
        # A failed call (no answer, 5xx, 401/403, no usable provider), or the unexpected (the database
        # restarting): tried again after a backoff.
        failures = call["failures"] + 1
        if failures > MAX_FAILURES:
            log.error("%s given up: %d failures; last: %s", label, failures, error)
            await _end(call, "abandoned", f"failed {failures} times; last: {error}")
            return None
        delay_ms = CALL_BACKOFF.ms(failures)
        if await _again(call, "failed", delay_ms, None, str(error)):
            expected = isinstance(error, NoHealthyProvider | CallFailed)
            (log.warning if expected else log.exception)("%s failed, tried again in %d ms: %s", label, delay_ms, error)
        return delay_ms
    async with db.connection() as conn:
        await conn.execute(call_rows.SUCCEEDED, call["id"], call["attempts"], result["provider"], result["status"])
    return None


async def adopt(
    integration_id: str,
    operation: str,
    payload: dict[str, Any],
    call_id: str,
    deferrals: int = 0,
    reserved_for: str | None = None,
    failures: int = 0,
) -> uuid.UUID | None:
    """A message of the shape from before calls were rows (still in Redis when this version started):
    its call becomes a row, due now, with the counts the message carried. None: its integration is gone."""
    try:
        row_id, _, _ = await record_call(
            uuid.UUID(integration_id),
            operation,
            payload,
            call_id=call_id,
            failures=failures,
            deferrals=deferrals,
            reserved_for=uuid.UUID(reserved_for) if reserved_for else None,
        )
    except NotFound:
        return None
    return row_id


async def _not_claimed(conn: asyncpg.Connection, row_id: uuid.UUID) -> int | None:
    """A message that claimed nothing is a duplicate (the call is running or done) or came early; an early
    one is sent again for when the call is due, so the call is not left to the sweep's grace."""
    why = await conn.fetchrow(call_rows.WHY_NOT_CLAIMED, row_id)
    if why is None or why["status"] not in call_rows.WAITING or not why["wait_ms"]:
        return None
    delay_ms = max(EARLY_RESEND_MIN_MS, why["wait_ms"])
    await send_call(row_id, delay_ms)
    return delay_ms


async def _again(call: asyncpg.Record, status: str, delay_ms: int, reserved_for: uuid.UUID | None, error: str) -> bool:
    """Record the next attempt's schedule, then wake a worker for it; False if the claim was no longer ours
    (the sweep took the call over after its lease ran out: what happens next is its decision)."""
    async with db.connection() as conn:
        ours = await conn.fetchval(
            call_rows.AGAIN, call["id"], call["attempts"], status, delay_ms, reserved_for, error[:2000]
        )
    if ours is not None:
        await send_call(call["id"], delay_ms)
    return ours is not None


async def _end(call: asyncpg.Record, status: str, error: str, status_code: int | None = None) -> None:
    async with db.connection() as conn:
        await conn.execute(call_rows.ENDED, call["id"], call["attempts"], status, error[:2000], status_code)
