"""What happens after a failed or lost attempt: the retry decision and the sweep (the DLQ itself: dlq.py).

The backoff middleware (tasks/broker.py) calls `decide_all` after retryable failures; the
scheduler calls `sweep` once a second for what a lost message or a dead worker left behind. Both end
in `decide`, so a lost attempt counts against the retry budget exactly like a failed one, and a
delivery can never circle for ever: it is retried by its policy and then dead-lettered. A retry is
held in PostgreSQL until due by PostgreSQL's clock; dispatch.py sends it then.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from app.core import db, queue, times
from app.webhooks import dispatch, retry, retry_config, statements, stats
from app.webhooks.dlq import to_dlq
from app.webhooks.tables import DlqReason

log = logging.getLogger("intime.delivery")
SWEEP_GRACE = timedelta(seconds=10)
SWEEP_BATCH = 500


@dataclass(frozen=True)
class RetryRequest:
    """What the actor hands to the backoff middleware: this attempt failed in a retryable way."""

    delivery_id: str
    attempt_number: int  # the fencing token: the decision applies only if the claim is still ours
    attempt_id: str
    retry_after_ms: int | None


@dataclass
class Swept:
    lost_messages: list[uuid.UUID] = field(default_factory=list)  # held again, for dispatch
    expired_leases: list[uuid.UUID] = field(default_factory=list)  # recorded lost (or decided) and scheduled
    slots: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]] = field(default_factory=list)


async def decide(conn, row, retry_after_ms: int | None, attempt_id: uuid.UUID) -> int | None:
    """processing -> failed (held until the next attempt is due) or -> dlq. Returns the delay in ms, or None."""
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
    await dispatch.wake(conn)
    return delay


async def schedule_retry(
    delivery_id: str, attempt_number: int, attempt_id: str, retry_after_ms: int | None
) -> int | None:
    """The decision after a retryable failure (only if the claim is still ours)."""
    async with db.connection() as conn, conn.transaction():
        row = await conn.fetchrow(statements.LOCK_FOR_DECISION, uuid.UUID(delivery_id), attempt_number)
        if row is None:
            return None  # moved on meanwhile (a replay, the sweep): nothing to decide
        return await decide(conn, row, retry_after_ms, uuid.UUID(attempt_id))


async def decide_all(requests: list[RetryRequest]) -> int:
    """Each retryable failure's next attempt, decided concurrently (the backoff middleware's work, and
    that of sends that finished after their message); returns how many will be retried.

    One decision that fails does not take the others with it, and the failed one stays as recorded,
    for the sweep to decide on once its lease has run out."""
    delays = await asyncio.gather(
        *(schedule_retry(r.delivery_id, r.attempt_number, r.attempt_id, r.retry_after_ms) for r in requests),
        return_exceptions=True,
    )
    scheduled = 0
    for request, delay in zip(requests, delays, strict=True):
        if isinstance(delay, BaseException):
            log.error("the retry decision for delivery %s failed: %r", request.delivery_id, delay)
        elif delay is not None:
            scheduled += 1
    return scheduled


async def sweep(grace: timedelta = SWEEP_GRACE) -> Swept:
    """Find what a lost message or a dead worker left behind, and hand it back to dispatch.

    - Handed to the queue more than `grace` ago and still unclaimed: Redis is asked whether the message
      exists (waiting, delayed for a Dramatiq retry, or taken by a worker and not yet acknowledged). Gone
      (Redis wiped, an enqueue that failed after its row was written): the delivery is held again and
      dispatch sends it in a new message; its old slot is freed. Alive: left alone, however long the
      queue, and looked at again after the others.
    - Lease run out: the worker died mid-send. Its attempt is recorded as `lost` (it may or may not
      have arrived) and the policy decides, as after any failure. If the attempt's failure was
      recorded and only the decision is missing, the history is already true: the policy decides on it.
    """
    swept = Swept()
    async with db.connection() as conn, conn.transaction():
        handed = await conn.fetch(statements.LOCK_HANDED_OVER, grace, SWEEP_BATCH)
        if handed:
            alive = await queue.deliveries_alive({str(row["message_id"]) for row in handed})
            lost = [row for row in handed if str(row["message_id"]) not in alive]
            if lost:
                await conn.execute(statements.UNHAND, [row["id"] for row in lost])
            gone = {row["id"] for row in lost}
            await conn.execute(statements.STILL_HANDED, [row["id"] for row in handed if row["id"] not in gone])
            swept.lost_messages = [row["id"] for row in lost]
            swept.slots.extend((row["webhook_id"], row["message_id"], row["id"]) for row in lost)
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
            await decide(conn, row, retry_after_ms, attempt_id)
            swept.expired_leases.append(row["id"])
            if row["message_id"] is not None:
                swept.slots.append((row["webhook_id"], row["message_id"], row["id"]))
    if swept.slots:
        await dispatch.release(swept.slots)
    return swept
