"""Bulk jobs: retry or clear everything a DLQ filter matches, or replay a webhook's failed deliveries.

A job is a row (progress, errors) worked through by the `run_bulk_job` actor in batches; the page's
progress bar and GET /jobs/{id} read that row.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from app.core import db, queue
from app.core.fields import as_uuid
from app.webhooks import dispatch, statements
from app.webhooks.dlq import DlqFilter, FailedSince

BULK_BATCH = 200

# kind -> (its filter, the statuses a replay takes, or None for clearing)
BULK_KINDS: dict[str, tuple[Any, list[str] | None]] = {
    "dlq_retry": (DlqFilter, ["dlq"]),
    "dlq_clear": (DlqFilter, None),
    "replay_failed": (FailedSince, ["failed", "dlq"]),
}


class Job(msgspec.Struct):
    id: uuid.UUID
    kind: str
    """dlq_retry, dlq_clear or replay_failed."""
    status: str
    """queued, running, done or failed."""
    total: int
    """How many items the filter matched when the job began."""
    processed: int
    errors: int
    """Items it could not take: their webhook is disabled or deleted, their event's payload was erased
    (statements.REPLAY takes none of those: nothing would be sent), or they changed meanwhile."""
    created_at: datetime
    finished_at: datetime | None


class JobStarted(msgspec.Struct):
    job_id: uuid.UUID


async def start_bulk(
    org_id: uuid.UUID, kind: str, dlq_filter: DlqFilter | FailedSince, user_id: uuid.UUID | None
) -> uuid.UUID:
    """Queue a bulk job over everything the filter matches; progress is read from the job row."""
    assert kind in BULK_KINDS
    where, args = dlq_filter.where(org_id)
    async with db.connection() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM webhook_deliveries d WHERE {where}", *args)  # noqa: S608
        job_id = await conn.fetchval(
            "INSERT INTO jobs (id, org_id, kind, status, params, total, created_by, created_at) "
            "VALUES ($1, $2, $3, 'queued', $4::jsonb, $5, $6, now()) RETURNING id",
            uuid.uuid4(),
            org_id,
            kind,
            json.dumps(dlq_filter.as_params()),
            total,
            user_id,
        )
    await queue.asend("run_bulk_job", str(job_id))
    return job_id


async def get_job(org_id: uuid.UUID, job_id: uuid.UUID | str) -> Job | None:
    key = as_uuid(job_id)
    if key is None:
        return None
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT id, kind, status, total, processed, errors, created_at, finished_at FROM jobs "
            "WHERE id = $1 AND org_id = $2",
            key,
            org_id,
        )
    return Job(**dict(row)) if row else None


async def run_bulk(job_id: str) -> None:
    """Work through a bulk job in batches, committing progress after each so the bar moves and a
    restarted job continues where it stopped (the filter no longer matches what is done)."""
    async with db.connection() as conn:
        job = await conn.fetchrow(
            "UPDATE jobs SET status = 'running' WHERE id = $1 AND status IN ('queued', 'running') "
            "RETURNING id, org_id, kind, params::text AS params, created_by, created_at",
            uuid.UUID(job_id),
        )
    if job is None:
        return
    try:
        await _work_through(job)
    except Exception:
        # Leave a visible end, not a progress bar that polls for ever; the admin can start it again.
        async with db.connection() as conn:
            await conn.execute("UPDATE jobs SET status = 'failed', finished_at = now() WHERE id = $1", job["id"])
        raise
    async with db.connection() as conn:
        await conn.execute("UPDATE jobs SET status = 'done', finished_at = now() WHERE id = $1", job["id"])


async def _work_through(job) -> None:
    filter_class, replay_statuses = BULK_KINDS[job["kind"]]
    selection = filter_class.from_params(json.loads(job["params"]))
    # Only what matched when the job began: a delivery retried here that fails again (re-entering the
    # DLQ later) is not this job's business again. The walk is a keyset over (time, id), so each
    # delivery is visited once, also those a retry cannot take (webhook disabled or deleted, payload
    # erased): those count as the job's errors.
    if selection.until is None or selection.until > job["created_at"]:
        selection.until = job["created_at"]
    where, args = selection.where(job["org_id"])
    column = filter_class.order_column
    n = len(args)
    select = (
        f"SELECT d.id, {column} AS at FROM webhook_deliveries d WHERE {where} "  # noqa: S608
        f"AND ({column}, d.id) > (${n + 1}, ${n + 2}) ORDER BY {column}, d.id LIMIT {BULK_BATCH}"
    )
    after: tuple[datetime, uuid.UUID] = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))
    while True:
        async with db.connection() as conn, conn.transaction():
            rows = await conn.fetch(select, *args, *after)
            if not rows:
                break
            ids = [row["id"] for row in rows]
            after = (rows[-1]["at"], rows[-1]["id"])
            if replay_statuses is not None:
                taken = await conn.fetch(statements.REPLAY, ids, job["org_id"], replay_statuses)
            else:
                taken = await conn.fetch(statements.CLEAR_MANY, ids, job["created_by"])
            done = [row["id"] for row in taken]
            hooks = {row["webhook_id"] for row in taken} if replay_statuses is not None else set()
            await conn.execute(
                "UPDATE jobs SET processed = processed + $2, errors = errors + $3 WHERE id = $1",
                job["id"],
                len(ids),
                len(ids) - len(done),
            )
        if hooks:
            await dispatch.dispatch(hooks)
