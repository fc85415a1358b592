"""The dead-letter queue: how a delivery gets there, what selects a set of its items, what an item shows.

A delivery is dead-lettered when it will not be retried by itself: its retries are spent, the
receiver gave a non-retryable answer, or its webhook was disabled or deleted. Each arrival is
announced (webhook.delivery.dead_lettered), so an organisation can be told. Items stay until an
admin retries them (a replay, operations.replay) or clears them (kept, marked, for audit).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core import db, times
from app.core.paging import check_limit
from app.events import services as events
from app.webhooks import delivery_settings, queries, schemas, statements
from app.webhooks.tables import DlqReason

# Failed deliveries in a row (retries exhausted, or a non-retryable answer) that disable a webhook.
# Deliveries, not attempts: a receiver that is down for a deploy fails many attempts at once under
# load, and its deliveries still succeed on a later retry; a webhook is disabled when its deliveries
# themselves keep failing. Any success resets the count.
AUTO_DISABLE_AFTER = 10
# Before that, `webhook.failing` warns at these counts, so someone can act before it is disabled.
FAILING_WARNINGS = (5, 8)
# Test sends never count, failed or not: an admin probing an endpoint being set up is not an outage.
TEST_EVENT = "webhook.test"
FAILED = (DlqReason.retries_exhausted, DlqReason.non_retryable, DlqReason.gone)
STOPPED = (DlqReason.webhook_disabled, DlqReason.webhook_deleted)
REASONS = tuple(r.value for r in DlqReason)
TEXT_LIMIT = 200
TEXT_FIELDS = ("webhook_id", "event_type", "reason")


# --- getting there ------------------------------------------------------------------------------------


async def to_dlq(
    conn, row, reason: DlqReason, *, fence: int | None = None, undo_attempt: bool = False, answer: int | None = None
) -> bool:
    """processing -> dlq (only while the claim numbered `fence` is still the current one). `answer` is
    the receiver's status for a non-retryable refusal, which counts towards auto-disable by the
    organisation's rules (delivery_settings)."""
    moved = await conn.fetchval(statements.TO_DLQ, row["id"], reason.value, 1 if undo_attempt else 0, fence)
    if moved is None:
        return False
    if reason not in STOPPED:  # those are counted once, by webhook.disabled
        await announce_dead_letter(conn, row["org_id"], row["webhook_id"], row["id"], row["event_type"], reason.value)
    if await _counts(conn, row, reason, answer):
        counted = await conn.fetchrow(statements.COUNT_FAILED_DELIVERY, row["webhook_id"])
        failures = counted["consecutive_failures"]
        if failures in FAILING_WARNINGS:
            payload = {
                "webhook_id": str(row["webhook_id"]),
                "name": counted["name"],
                "consecutive_failures": failures,
                "disabled_at": AUTO_DISABLE_AFTER,
            }
            await events.publish_in(conn, row["org_id"], "webhook.failing", payload)
        if failures >= AUTO_DISABLE_AFTER:
            await disable_in_transaction(
                conn, row["org_id"], row["webhook_id"], f"{AUTO_DISABLE_AFTER} failed deliveries in a row"
            )
    return True


async def _counts(conn, row, reason: DlqReason, answer: int | None) -> bool:
    if reason not in FAILED or row["event_type"] == TEST_EVENT:
        return False
    if reason is DlqReason.non_retryable:
        return delivery_settings.counts_towards_disable(answer, await delivery_settings.rules_in(conn, row["org_id"]))
    return True


async def disable_in_transaction(conn, org_id: uuid.UUID, webhook_id: uuid.UUID, reason: str) -> bool:
    """Disable (if enabled) inside the caller's transaction: by an admin, a 410, or AUTO_DISABLE_AFTER.

    It lives with the DLQ because a disabled webhook takes nothing: what waits for it goes there, in
    bounded batches after this commits (`drain_stopped`, run by the scheduler), announced once here by
    `webhook.disabled` with the count rather than an event per delivery: with 100k waiting, that was
    100k events inside an admin's request or a worker's recording transaction."""
    row = await conn.fetchrow(statements.DISABLE_WEBHOOK, webhook_id, reason)
    if row is None:
        return False
    waiting = await conn.fetchval(statements.COUNT_WAITING, webhook_id)
    payload = {"webhook_id": str(webhook_id), "name": row["name"], "reason": reason, "dead_lettered": waiting}
    await events.publish_in(conn, org_id, "webhook.disabled", payload)
    return True


DRAIN_BATCH = 1000


async def drain_stopped(batch: int = DRAIN_BATCH) -> int:
    """Move up to `batch` deliveries waiting for disabled or deleted webhooks to the DLQ, in one short
    transaction; returns how many. The scheduler calls it until it moves fewer than a batch."""
    moved = 0
    async with db.connection() as conn, conn.transaction():
        for (webhook_id,) in await conn.fetch(statements.STOPPED_WITH_WAITING):
            done = await conn.execute(statements.DRAIN_STOPPED, batch - moved, webhook_id)
            moved += int(done.rsplit(" ", 1)[1])
            if moved >= batch:
                break
    return moved


async def announce_dead_letter(conn, org_id, webhook_id, delivery_id, event_type: str, reason: str) -> None:
    # Not for the portal's own webhook.* events: a subscriber of dead-letter events that is itself
    # failing would otherwise feed on its own failures without end.
    if event_type.startswith("webhook."):
        return
    await events.publish_in(
        conn,
        org_id,
        "webhook.delivery.dead_lettered",
        {
            "webhook_id": str(webhook_id),
            "delivery_id": str(delivery_id),
            "event_type": event_type,
            "reason": reason,
        },
    )


# --- which items: the one filter, for the page, the API and the bulk jobs --------------------------------


class BadFilter(ValueError):
    """A filter the API refuses; `field` and `message` make the problem's `errors` entry, when there is one."""

    def __init__(self, detail: str, field: str | None = None, message: str | None = None) -> None:
        super().__init__(detail)
        self.field, self.message = field, message


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
        """What a bulk job stores; `parse_filter` reads it back."""
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
    def from_params(cls, params: Mapping[str, Any]) -> DlqFilter:
        return parse_filter(params)


def _time(value: Any, *, lenient: bool) -> datetime | None:
    if isinstance(value, datetime):  # a query parameter Litestar has read already
        return times.as_utc(value)
    if lenient:
        return times.parse_time_or_none(value)
    try:
        return times.parse_time(value)
    except ValueError:
        raise BadFilter("since and until are ISO 8601 times.") from None


def parse_filter(params: Mapping[str, Any], *, lenient: bool = False) -> DlqFilter:
    """The DLQ filter from a query string, a bulk request's body or a job's stored params.

    The API refuses what it cannot read (BadFilter, with the field); a page (`lenient`) drops it, so
    a hand-edited URL still shows a list rather than an error."""
    unknown = sorted(set(params) - {*TEXT_FIELDS, "since", "until"})
    if unknown and not lenient:
        raise BadFilter(f"Unknown filter field {', '.join(unknown)}.")
    since, until = _time(params.get("since"), lenient=lenient), _time(params.get("until"), lenient=lenient)
    # An empty field on a page means "any"; the API takes what it is given (an empty text matches none).
    texts = {field: (params.get(field) or None) if lenient else params.get(field) for field in TEXT_FIELDS}
    if not lenient:
        for field, value in texts.items():
            if value is not None and (not isinstance(value, str) or len(value) > TEXT_LIMIT or "\x00" in value):
                raise BadFilter(f"{field} must be a short text.", field, "must be a short text")
    try:
        hook = uuid.UUID(str(texts["webhook_id"])) if texts["webhook_id"] else None
    except ValueError:
        if not lenient:
            raise BadFilter("webhook_id is not a UUID.", "webhook_id", "not a UUID") from None
        hook = None
    reason = texts["reason"]
    if not lenient and reason is not None and reason not in REASONS:
        raise BadFilter(f"reason is one of {', '.join(REASONS)}.", "reason", "unknown reason")
    return DlqFilter(webhook_id=hook, event_type=texts["event_type"], reason=reason, since=since, until=until)


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
    def from_params(cls, params: Mapping[str, Any]) -> FailedSince:
        return cls(
            webhook_id=uuid.UUID(params["webhook_id"]), since=times.as_utc(datetime.fromisoformat(params["since"]))
        )


# --- what an item shows: a delivery (schemas.DeliveryOut), newest first ---------------------------------


async def list_dlq(
    org_id: uuid.UUID, dlq_filter: DlqFilter, limit: int | None = None, cursor: str | None = None
) -> schemas.DeliveryPage:
    """Newest first, a keyset page (cursor over dlq_at, id)."""
    where, args = dlq_filter.where(org_id)
    page = await queries.keyset_page(where, args, "d.dlq_at", check_limit(limit), cursor)
    return schemas.DeliveryPage([schemas.DeliveryOut(**row) for row in page.items], page.next_cursor)
