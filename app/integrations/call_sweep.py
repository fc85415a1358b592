"""What a lost message or a dead worker left behind of the background calls (integration_calls); the
scheduler runs this once a second (tasks.scheduler.Scheduler.sweep_calls) and sends what it returns.

DESIGN: anything Redis loses, PostgreSQL can rebuild. A call's row says when its next attempt is due,
so a Redis wipe (or an enqueue whose message never made it) costs a call only the grace below, and a
worker that dies mid-call costs it its lease. Several schedulers share the work: rows are taken with
FOR UPDATE SKIP LOCKED, and a message sent twice is harmless (the claim lets one through).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.core import db
from app.integrations import call_rows
from app.integrations.call_rows import CALL_BACKOFF, LOST_ATTEMPT, MAX_FAILURES

# A waiting call due this long without being claimed has most likely lost its message. Long enough that
# a call merely waiting in a busy queue is not sent twice (which would be harmless, only wasted work).
SWEEP_GRACE = timedelta(seconds=10)
SWEEP_RECHECK = timedelta(seconds=20)  # a re-sent message lost again is re-sent after this
SWEEP_BATCH = 500


async def sweep(grace: timedelta = SWEEP_GRACE) -> list[tuple[uuid.UUID, int | None]]:
    """Calls to hand to the workers again, as (row id, delay ms or None for now).

    - Waiting (queued, failed, deferred) and due for longer than `grace` by PostgreSQL's clock, and not
      re-sent in the last SWEEP_RECHECK: the message must have been lost. Re-sent now; the schedule
      itself does not move.
    - Running with its lease run out: the worker died mid-call, and the provider may or may not have got
      it. That counts as a failed attempt: tried again after the backoff (under the same
      Idempotency-Key, so a provider that got it acts once), or abandoned after MAX_FAILURES.
    """
    async with db.connection() as conn:
        overdue = await conn.fetch(call_rows.REQUEUE_OVERDUE, grace, SWEEP_RECHECK, SWEEP_BATCH)
    due: list[tuple[uuid.UUID, int | None]] = [(row["id"], None) for row in overdue]
    async with db.connection() as conn, conn.transaction():
        for row in await conn.fetch(call_rows.LOCK_EXPIRED_LEASES, SWEEP_BATCH):
            failures = row["failures"] + 1
            if failures > MAX_FAILURES:
                error = f"failed {failures} times; last: {LOST_ATTEMPT}"
                await conn.execute(call_rows.ENDED, row["id"], row["attempts"], "abandoned", error, None)
                continue
            delay_ms = CALL_BACKOFF.ms(failures)
            await conn.execute(call_rows.AGAIN, row["id"], row["attempts"], "failed", delay_ms, None, LOST_ATTEMPT)
            due.append((row["id"], delay_ms))
    return due
