"""What happens after a failed or lost attempt: the retry decision and the sweep (the DLQ itself: dlq.py).

The backoff middleware (tasks/broker.py) calls `schedule_retry` after a retryable failure; the
scheduler calls `sweep` once a second for what a lost message or a dead worker left behind. Both end
in `decide`, so a lost attempt counts against the retry budget exactly like a failed one, and a
delivery can never circle for ever: it is retried by its policy and then dead-lettered.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.core import db, times
from app.webhooks import retry, retry_config, statements, stats
from app.webhooks.dlq import to_dlq
from app.webhooks.tables import DlqReason

SWEEP_GRACE = timedelta(seconds=10)
SWEEP_RECHECK = timedelta(seconds=20)  # a re-enqueued message lost again is re-enqueued after this
SWEEP_BATCH = 500


async def decide(conn, row, retry_after_ms: int | None, attempt_id: uuid.UUID) -> int | None:
    """processing -> failed (next attempt scheduled) or -> dlq. Returns the delay in ms, or None."""
    if row["deleted_at"] is not None or not row["enabled"]:
        reason = DlqReason.webhook_deleted if row["deleted_at"] is not None else DlqReason.webhook_disabled
        await to_dlq(conn, row, reason)
        return None
    try:
        policy = retry_config.effective_policy(row["override"], await retry_config.org_policy_in(conn, row["org_id"]))
    except retry.PolicyError:
        policy = retry.DEFAULT_POLICY
    delay = retry.next_delay_ms(policy, row["attempt_count"] - row["attempts_base"], retry_after_ms)
    if delay is None:
        await to_dlq(conn, row, DlqReason.retries_exhausted)
        return None
    await conn.execute(statements.SCHEDULE_RETRY, row["id"], delay)
    await conn.execute(statements.NOTE_NEXT_DELAY, attempt_id, delay)
    return delay


async def schedule_retry(
    delivery_id: str, attempt_number: int, attempt_id: str, retry_after_ms: int | None
) -> int | None:
    """The backoff middleware's decision after a retryable failure (only if the claim is still ours)."""
    async with db.connection() as conn, conn.transaction():
        row = await conn.fetchrow(statements.LOCK_FOR_DECISION, uuid.UUID(delivery_id), attempt_number)
        if row is None:
            return None  # moved on meanwhile (a replay, the sweep): nothing to decide
        return await decide(conn, row, retry_after_ms, uuid.UUID(attempt_id))


async def sweep(grace: timedelta = SWEEP_GRACE, *, requeue_overdue: bool = True) -> list[tuple[uuid.UUID, int | None]]:
    """Find what a lost message or a dead worker left behind; returns (delivery id, delay ms) to enqueue.

    - Due for longer than `grace` and not re-enqueued in the last SWEEP_RECHECK: the message must have been
      lost (Redis wiped, an enqueue that failed). Re-enqueue now; the schedule itself does not move.
    - Lease run out: the worker died mid-send. Its attempt is recorded as `lost` (it may or may not
      have arrived) and the policy decides, as after any failure. If the attempt's failure was
      recorded and only the decision is missing, the history is already true: the policy decides on it.
    """
    due: list[tuple[uuid.UUID, int | None]] = []
    async with db.connection() as conn, conn.transaction():
        rows = (
            []
            if not requeue_overdue
            else await conn.fetch(statements.REQUEUE_OVERDUE, grace, SWEEP_RECHECK, SWEEP_BATCH)
        )
        due.extend((row["id"], None) for row in rows)
    async with db.connection() as conn, conn.transaction():
        expired = await conn.fetch(statements.LOCK_EXPIRED_LEASES, SWEEP_BATCH)
        for row in expired:
            recorded = await conn.fetchrow(statements.RECORDED_ATTEMPT, row["id"], row["attempt_count"])
            if recorded is not None:
                attempt_id = recorded["id"]
                wait = times.parse_retry_after(recorded["retry_after"])
                retry_after_ms = None if wait is None else int(wait * 1000)
            else:
                attempt_id, retry_after_ms = uuid.uuid4(), None
                await conn.execute(
                    statements.INSERT_LOST_ATTEMPT,
                    attempt_id,
                    row["id"],
                    row["attempt_count"],
                    row["next_trigger"],
                    row["updated_at"],
                    row["url"],
                )
                stats.record_attempt(
                    row["webhook_id"],
                    row["updated_at"],
                    success=False,
                    first=row["attempt_count"] == 1,
                    duration_ms=None,
                )
            delay = await decide(conn, row, retry_after_ms, attempt_id)
            if delay is not None:
                due.append((row["id"], delay))
    return due
