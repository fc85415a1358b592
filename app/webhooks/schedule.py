"""What happens after a failed or lost attempt: the retry decision, the DLQ, and the sweep.

The backoff middleware (tasks/broker.py) calls `schedule_retry` after a retryable failure; the
scheduler calls `sweep` once a second for what a lost message or a dead worker left behind. Both end
in `decide`, so a lost attempt counts against the retry budget exactly like a failed one, and a
delivery can never circle for ever: it is retried by its policy and then dead-lettered.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.core import db
from app.webhooks import retry, services, stats
from app.webhooks.tables import DlqReason

SWEEP_GRACE = timedelta(seconds=10)
SWEEP_RECHECK = timedelta(seconds=20)  # a re-enqueued message lost again is re-enqueued after this
SWEEP_BATCH = 500
# Failed deliveries in a row (retries exhausted, or a non-retryable answer) that disable a webhook.
# Deliveries, not attempts: a receiver that is down for a deploy fails many attempts at once under
# load, and its deliveries still succeed on a later retry; a webhook is disabled when its deliveries
# themselves keep failing. Any success resets the count.
AUTO_DISABLE_AFTER = 10
FAILED = (DlqReason.retries_exhausted, DlqReason.non_retryable, DlqReason.gone)

DECISION_COLUMNS = (
    "d.id, d.org_id, d.webhook_id, d.event_type, d.attempt_count, d.attempts_base, "
    "w.retry_policy::text AS override, w.enabled, w.deleted_at"
)


async def to_dlq(conn, row, reason: DlqReason, *, fence: int | None = None, undo_attempt: bool = False) -> bool:
    """processing -> dlq (only while the claim numbered `fence` is still the current one)."""
    moved = await conn.fetchval(
        "UPDATE webhook_deliveries SET status = 'dlq', dlq_reason = $2, dlq_at = now(), updated_at = now(), "
        "lease_expires_at = NULL, next_attempt_at = NULL, cleared_at = NULL, cleared_by = NULL, "
        "attempt_count = attempt_count - $3 "
        "WHERE id = $1 AND ($4::int IS NULL OR (status = 'processing' AND attempt_count = $4)) RETURNING id",
        row["id"],
        reason.value,
        1 if undo_attempt else 0,
        fence,
    )
    if moved is None:
        return False
    await services.announce_dead_letter(
        conn, row["org_id"], row["webhook_id"], row["id"], row["event_type"], reason.value
    )
    if reason in FAILED:
        failures = await conn.fetchval(
            "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 WHERE id = $1 "
            "RETURNING consecutive_failures",
            row["webhook_id"],
        )
        if failures >= AUTO_DISABLE_AFTER:
            await services.disable_in_transaction(
                conn, row["org_id"], row["webhook_id"], f"{AUTO_DISABLE_AFTER} failed deliveries in a row"
            )
    return True


async def _org_policy(conn, org_id) -> retry.Policy:
    found = await conn.fetchrow(
        "SELECT strategy, base_delay_ms, max_delay_ms, max_retries, jitter FROM retry_policies WHERE org_id = $1",
        org_id,
    )
    return retry.Policy(**dict(found)) if found else retry.DEFAULT_POLICY


async def decide(conn, row, retry_after_ms: int | None, attempt_id: uuid.UUID) -> int | None:
    """processing -> failed (next attempt scheduled) or -> dlq. Returns the delay in ms, or None."""
    if row["deleted_at"] is not None or not row["enabled"]:
        reason = DlqReason.webhook_deleted if row["deleted_at"] is not None else DlqReason.webhook_disabled
        await to_dlq(conn, row, reason)
        return None
    try:
        policy = services.effective_policy(row["override"], await _org_policy(conn, row["org_id"]))
    except retry.PolicyError:
        policy = retry.DEFAULT_POLICY
    delay = retry.next_delay_ms(policy, row["attempt_count"] - row["attempts_base"], retry_after_ms)
    if delay is None:
        await to_dlq(conn, row, DlqReason.retries_exhausted)
        return None
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'failed', lease_expires_at = NULL, updated_at = now(), "
        "next_attempt_at = now() + make_interval(secs => $2::float8 / 1000), next_trigger = 'scheduled', "
        "requeued_at = NULL WHERE id = $1",
        row["id"],
        delay,
    )
    await conn.execute("UPDATE delivery_attempts SET next_delay_ms = $2 WHERE id = $1", attempt_id, delay)
    return delay


async def schedule_retry(
    delivery_id: str, attempt_number: int, attempt_id: str, retry_after_ms: int | None
) -> int | None:
    """The backoff middleware's decision after a retryable failure (only if the claim is still ours)."""
    async with db.connection() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {DECISION_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "  # noqa: S608
            "WHERE d.id = $1 AND d.status = 'processing' AND d.attempt_count = $2 FOR UPDATE OF d",
            uuid.UUID(delivery_id),
            attempt_number,
        )
        if row is None:
            return None  # moved on meanwhile (a replay, the sweep): nothing to decide
        return await decide(conn, row, retry_after_ms, uuid.UUID(attempt_id))


async def sweep(grace: timedelta = SWEEP_GRACE, *, requeue_overdue: bool = True) -> list[tuple[uuid.UUID, int | None]]:
    """Find what a lost message or a dead worker left behind; returns (delivery id, delay ms) to enqueue.

    - Due for longer than `grace` and not re-enqueued in the last SWEEP_RECHECK: the message must have been
      lost (Redis wiped, an enqueue that failed). Re-enqueue now; the schedule itself does not move.
    - Lease run out: the worker died mid-send. Its attempt is recorded as `lost` (it may or may not
      have arrived) and the policy decides, as after any failure.
    """
    due: list[tuple[uuid.UUID, int | None]] = []
    async with db.connection() as conn, conn.transaction():
        rows = (
            []
            if not requeue_overdue
            else await conn.fetch(
                "UPDATE webhook_deliveries SET requeued_at = now() WHERE id IN ("
                "SELECT id FROM webhook_deliveries WHERE status IN ('pending', 'failed') "
                "AND next_attempt_at < now() - $1::interval "
                "AND (requeued_at IS NULL OR requeued_at < now() - $2::interval) "
                "LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
                grace,
                SWEEP_RECHECK,
                SWEEP_BATCH,
            )
        )
        due.extend((row["id"], None) for row in rows)
    async with db.connection() as conn, conn.transaction():
        expired = await conn.fetch(
            f"SELECT {DECISION_COLUMNS}, d.next_trigger, d.updated_at, w.url "  # noqa: S608
            "FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
            "WHERE d.status = 'processing' AND d.lease_expires_at < now() "
            f"LIMIT {SWEEP_BATCH} FOR UPDATE OF d SKIP LOCKED",
        )
        for row in expired:
            attempt_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO delivery_attempts (id, delivery_id, attempt_number, trigger, started_at, request_url, "
                "error_class, error_message, outcome) VALUES ($1, $2, $3, $4, $5, $6, 'lease_expired', "
                "'the worker sending this attempt stopped before it recorded the outcome', 'lost')",
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
            delay = await decide(conn, row, None, attempt_id)
            if delay is not None:
                due.append((row["id"], delay))
    return due
