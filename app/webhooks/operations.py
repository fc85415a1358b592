"""What an admin does to deliveries: send a test, replay, retry or clear from the DLQ, one or in bulk.

A replay (and a DLQ retry, which is a replay of a dead-lettered delivery) adds an attempt to the same
delivery, so the receiver sees the same webhook-id and can de-duplicate; it also starts a fresh retry
budget, so a retried delivery gets the whole policy again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.core import db, queue
from app.events import services as events
from app.webhooks import services

BULK_BATCH = 200


class Conflict(RuntimeError):
    pass


async def send_test(org_id: uuid.UUID, webhook_id: uuid.UUID) -> uuid.UUID:
    """Publish a webhook.test event and its one delivery, to this webhook only, in one transaction: the
    event is marked fanned out at once, so no other webhook subscribed to system events gets it."""
    webhook = await services.get_webhook(org_id, webhook_id)
    payload = {"message": "This is a test event from InTime Integrations.", "webhook_id": str(webhook.id)}
    async with db.connection() as conn, conn.transaction():
        event_id = await events.publish_in(conn, org_id, "webhook.test", payload)
        delivery_id = await conn.fetchval(
            "INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, event_type, status, next_trigger, "
            "next_attempt_at, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, 'webhook.test', 'pending', 'test', now(), now(), now()) RETURNING id",
            uuid.uuid4(),
            org_id,
            webhook.id,
            event_id,
        )
        await conn.execute("UPDATE events SET fanned_out_at = now() WHERE id = $1", event_id)
    await queue.asend("deliver_webhook", str(delivery_id))
    return delivery_id


REPLAY_SQL = """
UPDATE webhook_deliveries d SET status = 'pending', next_trigger = 'manual', attempts_base = d.attempt_count,
    next_attempt_at = now(), lease_expires_at = NULL, dlq_reason = NULL, dlq_at = NULL, cleared_at = NULL,
    cleared_by = NULL, completed_at = NULL, updated_at = now()
FROM webhooks w
WHERE d.id = ANY($1) AND d.org_id = $2 AND d.status = ANY($3) AND w.id = d.webhook_id
  AND w.deleted_at IS NULL AND w.enabled
RETURNING d.id
"""


async def replay(org_id: uuid.UUID, delivery_id: uuid.UUID | str, *, only_dlq: bool = False) -> uuid.UUID:
    key = services.as_uuid(delivery_id)
    if key is None:
        raise services.NotFound("No such delivery.")
    statuses = ["dlq"] if only_dlq else ["success", "failed", "dlq", "pending"]
    async with db.connection() as conn:
        done = await conn.fetchval(REPLAY_SQL, [key], org_id, statuses)
        if done is None:
            row = await conn.fetchrow(
                "SELECT d.status, d.cleared_at, w.enabled, w.deleted_at FROM webhook_deliveries d "
                "JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1 AND d.org_id = $2",
                key,
                org_id,
            )
            if row is None:
                raise services.NotFound("No such delivery in this organisation.")
            if row["deleted_at"] is not None:
                raise Conflict("Its webhook was deleted; there is nowhere to send it.")
            if not row["enabled"]:
                raise Conflict("Its webhook is disabled: enable the webhook first, then retry.")
            if row["status"] == "processing":
                raise Conflict("It is being sent right now; wait for this attempt to finish.")
            raise Conflict(f"Only dead-lettered deliveries can be retried from the DLQ (this one is {row['status']}).")
    await queue.asend("deliver_webhook", str(key))
    return key


async def clear(org_id: uuid.UUID, delivery_id: uuid.UUID | str, user_id: uuid.UUID | None) -> None:
    key = services.as_uuid(delivery_id)
    if key is None:
        raise services.NotFound("No such delivery.")
    async with db.connection() as conn:
        done = await conn.fetchval(
            "UPDATE webhook_deliveries SET cleared_at = now(), cleared_by = $3, updated_at = now() "
            "WHERE id = $1 AND org_id = $2 AND status = 'dlq' AND cleared_at IS NULL RETURNING id",
            key,
            org_id,
            user_id,
        )
        if done is None:
            exists = await conn.fetchval(
                "SELECT status FROM webhook_deliveries WHERE id = $1 AND org_id = $2", key, org_id
            )
            if exists is None:
                raise services.NotFound("No such delivery in this organisation.")
            raise Conflict("It is not in the DLQ (or was cleared already).")


# --- the DLQ filter, shared by the page, the API and the bulk jobs -------------------------------------


@dataclass
class DlqFilter:
    webhook_id: uuid.UUID | None = None
    event_type: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_cleared: bool = False
    order_column = "d.dlq_at"

    def where(self, org_id: uuid.UUID) -> tuple[str, list[Any]]:
        clauses: list[str] = ["d.org_id = $1", "d.status = 'dlq'"]
        args: list[Any] = [org_id]
        for column, value in (
            ("d.webhook_id = ", self.webhook_id),
            ("d.event_type = ", self.event_type),
            ("d.dlq_reason = ", self.reason),
            ("d.dlq_at >= ", self.since),
            ("d.dlq_at < ", self.until),
        ):
            if value is not None:
                args.append(value)
                clauses.append(f"{column}${len(args)}")
        if not self.include_cleared:
            clauses.append("d.cleared_at IS NULL")
        return " AND ".join(clauses), args

    def as_params(self) -> dict[str, Any]:
        return {
            key: (
                str(value)
                if isinstance(value, uuid.UUID)
                else value.isoformat()
                if isinstance(value, datetime)
                else value
            )
            for key, value in self.__dict__.items()
            if value not in (None, False)
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> DlqFilter:
        return cls(
            webhook_id=uuid.UUID(params["webhook_id"]) if params.get("webhook_id") else None,
            event_type=params.get("event_type"),
            reason=params.get("reason"),
            since=datetime.fromisoformat(params["since"]) if params.get("since") else None,
            until=datetime.fromisoformat(params["until"]) if params.get("until") else None,
        )


@dataclass
class FailedSince:
    """A webhook's deliveries that failed (retrying or dead-lettered) since a time: "Replay all failed"."""

    webhook_id: uuid.UUID
    since: datetime
    until: datetime | None = None
    order_column = "d.created_at"

    def where(self, org_id: uuid.UUID) -> tuple[str, list[Any]]:
        clauses = ["d.org_id = $1", "d.webhook_id = $2", "d.status IN ('failed', 'dlq')", "d.created_at >= $3"]
        args: list[Any] = [org_id, self.webhook_id, self.since]
        if self.until is not None:
            args.append(self.until)
            clauses.append(f"d.created_at < ${len(args)}")
        return " AND ".join(clauses), args

    def as_params(self) -> dict[str, Any]:
        return {"webhook_id": str(self.webhook_id), "since": self.since.isoformat()}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FailedSince:
        return cls(webhook_id=uuid.UUID(params["webhook_id"]), since=datetime.fromisoformat(params["since"]))


# kind -> (its filter, the statuses a replay takes, or None for clearing)
BULK_KINDS: dict[str, tuple[Any, list[str] | None]] = {
    "dlq_retry": (DlqFilter, ["dlq"]),
    "dlq_clear": (DlqFilter, None),
    "replay_failed": (FailedSince, ["failed", "dlq"]),
}


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
    # delivery is visited once, also those a retry cannot take (webhook disabled or deleted).
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
                done = [row["id"] for row in await conn.fetch(REPLAY_SQL, ids, job["org_id"], replay_statuses)]
            else:
                done = [
                    row["id"]
                    for row in await conn.fetch(
                        "UPDATE webhook_deliveries SET cleared_at = now(), cleared_by = $2, updated_at = now() "
                        "WHERE id = ANY($1) AND status = 'dlq' AND cleared_at IS NULL RETURNING id",
                        ids,
                        job["created_by"],
                    )
                ]
            await conn.execute(
                "UPDATE jobs SET processed = processed + $2, errors = errors + $3 WHERE id = $1",
                job["id"],
                len(ids),
                len(ids) - len(done),
            )
        if replay_statuses is not None:
            await queue.asend_many("deliver_webhook", [(str(i),) for i in done])
