"""The pruner: removes what is past its retention, in bounded batches, safe in several copies.

Every statement removes at most `INTIME_PRUNE_BATCH` rows it locked with `FOR UPDATE SKIP LOCKED`, in
its own short transaction: no long lock, nothing a worker waits for, and two schedulers pruning at
once split the rows instead of fighting over them. Each reads an index that leads with the
organisation or webhook it prunes for, so an organisation that keeps its records longer costs the
others nothing (a global scan by age would re-read its rows on every pass).

What goes, per organisation (its retention, app.lifecycle.retention):
- bodies: after `bodies`, an attempt's response body (it keeps status, headers and timings). A mark
  per webhook says how far this has gone, so no attempt is read twice.
- deliveries: succeeded ones after `deliveries`, with their attempts (and finished background
  integration calls); dead-lettered ones nobody
  cleared after `deliveries` from when they were dead-lettered, but only once announced a day ahead
  (`webhook.dlq.expiring`, one event per organisation per pass that finds any); cleared ones after
  `cleared_dlq` from when they were cleared. Deliveries still on their way are never removed.
- events: after `events` (and never while a delivery of theirs is kept).
- health checks: after `health_checks`, first added into hourly summaries (`health_check_hours`),
  which go after `summaries` with the webhooks' hourly statistics.
- jobs: finished bulk jobs after `jobs`.
- audit: failover switches, OAuth connection history and erasures after `audit`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.core import db
from app.core.settings import DAY, get_settings
from app.events import services as events
from app.lifecycle import retention
from app.lifecycle.removals import (
    ADD_NOTICE,
    AUDIT,
    BODIES_UNTIL,
    CLEARED,
    COUNT_BODIES,
    ENSURE_MARK,
    EVENTS,
    EXPIRED_DLQ,
    EXPIRING,
    FINISHED_CALLS,
    FORGET_NOTICES,
    HEALTH_CHECKS,
    HEALTH_HOURS,
    JOBS,
    LAST_NOTICE,
    LOCK_MARK,
    LOCK_NOTICES,
    RIPE_NOTICE,
    SET_MARK,
    STATS_HOURS,
    STRIP_BODIES,
    SUCCEEDED,
    Removal,
)

log = logging.getLogger("intime.prune")

NOTICE_AHEAD_SECONDS = DAY
"""Uncleared DLQ items are announced this long before they go."""

RECORD_STATE = """
INSERT INTO prune_state (kind, last_run_at, last_removed, total_removed, last_error)
VALUES ($1, now(), $2, $2, $3)
ON CONFLICT (kind) DO UPDATE SET last_run_at = now(), last_removed = excluded.last_removed,
    total_removed = prune_state.total_removed + excluded.last_removed, last_error = excluded.last_error
"""


# --- the pass ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """One organisation's retention, and its webhooks (deleted ones too: their history is pruned)."""

    org_id: uuid.UUID
    keep: retention.Retention
    webhooks: list[uuid.UUID]


async def _scopes() -> list[Scope]:
    chosen = await retention.all_chosen()
    base = retention.default_retention()
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT o.id, coalesce(array_agg(w.id) FILTER (WHERE w.id IS NOT NULL), '{}') AS hooks "
            "FROM organizations o LEFT JOIN webhooks w ON w.org_id = o.id GROUP BY o.id ORDER BY o.id"
        )
    return [
        Scope(
            row["id"],
            retention.Retention(chosen=chosen[row["id"]], defaults=base.defaults, caps=base.caps)
            if row["id"] in chosen
            else base,
            list(row["hooks"]),
        )
        for row in rows
    ]


async def _drain(removal: Removal, key: uuid.UUID, seconds: int, *extra: Any) -> int:
    """Remove a batch at a time until less than a batch is left."""
    batch = get_settings().retention.batch
    total = 0
    while True:
        async with db.connection() as conn:
            removed = await conn.fetchval(removal.delete, key, float(seconds), batch, *extra)
        total += removed
        if removed < batch:
            return total


async def _strip_bodies(webhook_id: uuid.UUID, seconds: int) -> int:
    batch = get_settings().retention.batch
    total = 0
    while True:
        async with db.connection() as conn, conn.transaction():
            await conn.execute(ENSURE_MARK, webhook_id)
            mark = await conn.fetchval(LOCK_MARK, webhook_id)
            if mark is None:
                return total  # another scheduler is on this webhook now
            until = await conn.fetchval(BODIES_UNTIL, webhook_id, float(seconds), batch, mark)
            if until is None:
                return total
            total += await conn.fetchval(STRIP_BODIES, webhook_id, mark, until)
            await conn.execute(SET_MARK, webhook_id, until)


async def _announce_and_expire_dlq(scope: Scope) -> int:
    """Announce what reaches its retention soon, then remove what was announced a day ago and is due."""
    seconds = scope.keep.seconds("deliveries")
    async with db.connection() as conn, conn.transaction():
        if await conn.fetchval(LOCK_NOTICES, scope.org_id):
            last = await conn.fetchrow(LAST_NOTICE, scope.org_id)
            if last["at"] is None or (await conn.fetchval("SELECT now()") - last["at"]).total_seconds() >= 3600:
                window = float(seconds - NOTICE_AHEAD_SECONDS - 3600)
                rows = await conn.fetch(EXPIRING, scope.org_id, window, last["through"])
                if rows:
                    await _announce(conn, scope.org_id, rows, seconds)
    async with db.connection() as conn:
        ripe = await conn.fetchval(RIPE_NOTICE, scope.org_id, float(NOTICE_AHEAD_SECONDS))
        if ripe is None:
            return 0
        await conn.execute(FORGET_NOTICES, scope.org_id, ripe)
    return await _drain(EXPIRED_DLQ, scope.org_id, seconds, ripe)


async def _announce(conn, org_id: uuid.UUID, rows: list, seconds: int) -> None:
    now = await conn.fetchval("SELECT now()")
    soonest = now + timedelta(seconds=NOTICE_AHEAD_SECONDS)  # nothing goes sooner than a day from now

    def expires(dlq_at: datetime) -> str:
        return max(dlq_at + timedelta(seconds=seconds), soonest).isoformat().replace("+00:00", "Z")

    last: datetime = max(row["last"] for row in rows)
    await events.publish_in(
        conn,
        org_id,
        "webhook.dlq.expiring",
        {
            "count": sum(row["n"] for row in rows),
            "retention_days": round(seconds / DAY, 3),
            "first_expires_at": expires(min(row["first"] for row in rows)),
            "last_expires_at": expires(last),
            "webhooks": [{"webhook_id": str(row["webhook_id"]), "count": row["n"]} for row in rows],
        },
    )
    await conn.execute(ADD_NOTICE, org_id, last)


# kind -> what one organisation's share of it takes
_KINDS: dict[str, Callable[[Scope], Any]] = {}


def _kind(name: str):
    def register(work):
        _KINDS[name] = work
        return work

    return register


@_kind("bodies")
async def _bodies(scope: Scope) -> int:
    seconds = scope.keep.seconds("bodies")
    if seconds >= scope.keep.seconds("deliveries"):
        return 0  # the deliveries go first, bodies and all: rewriting each attempt would only bloat
    return sum([await _strip_bodies(hook, seconds) for hook in scope.webhooks])


@_kind("deliveries")
async def _deliveries(scope: Scope) -> int:
    seconds = scope.keep.seconds("deliveries")
    removed = sum([await _drain(SUCCEEDED, hook, seconds) for hook in scope.webhooks])
    removed += await _drain(FINISHED_CALLS, scope.org_id, seconds)
    return removed + await _announce_and_expire_dlq(scope)


@_kind("cleared_dlq")
async def _cleared(scope: Scope) -> int:
    return await _drain(CLEARED, scope.org_id, scope.keep.seconds("cleared_dlq"))


@_kind("events")
async def _events(scope: Scope) -> int:
    # An event is kept as long as the longest of its own retention and its deliveries': scanning from
    # its own alone would re-read, every pass, each event whose deliveries are kept longer.
    seconds = max(scope.keep.seconds("events"), scope.keep.seconds("deliveries"))
    return await _drain(EVENTS, scope.org_id, seconds)


@_kind("health_checks")
async def _health(scope: Scope) -> int:
    return await _drain(HEALTH_CHECKS, scope.org_id, scope.keep.seconds("health_checks"))


@_kind("summaries")
async def _summaries(scope: Scope) -> int:
    seconds = scope.keep.seconds("summaries")
    removed = await _drain(HEALTH_HOURS, scope.org_id, seconds)
    return removed + sum([await _drain(STATS_HOURS, hook, seconds) for hook in scope.webhooks])


@_kind("jobs")
async def _jobs(scope: Scope) -> int:
    return await _drain(JOBS, scope.org_id, scope.keep.seconds("jobs"))


@_kind("audit")
async def _audit(scope: Scope) -> int:
    seconds = scope.keep.seconds("audit")
    return sum([await _drain(removal, scope.org_id, seconds) for removal in AUDIT])


async def run_pass() -> dict[str, Any]:
    """One pass over every organisation and kind; returns what each kind removed (and the seconds)."""
    started = time.monotonic()
    scopes = await _scopes()
    report: dict[str, Any] = {}
    for name, work in _KINDS.items():
        removed, error = 0, None
        for scope in scopes:
            try:
                removed += await work(scope)
            except Exception as failure:  # one organisation's failure must not stop the others' pruning
                log.exception("pruning %s for organisation %s failed", name, scope.org_id)
                error = f"{type(failure).__name__}: {failure}"[:500]
        async with db.connection() as conn:
            await conn.execute(RECORD_STATE, name, removed, error)
        report[name] = removed
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


# --- what a pass would remove --------------------------------------------------------------------------


async def would_remove() -> dict[str, int]:
    """What a pass would remove now, per kind (bodies: the attempts whose body would go)."""
    counts = dict.fromkeys(_KINDS, 0)

    async def add(kind: str, removal: Removal | str, key: uuid.UUID, seconds: int, *extra: Any) -> None:
        sql = removal if isinstance(removal, str) else removal.count
        async with db.connection() as conn:
            counts[kind] += await conn.fetchval(sql, key, float(seconds), 0, *extra)

    for scope in await _scopes():
        keep, org = scope.keep.seconds, scope.org_id
        for hook in scope.webhooks:
            await add("deliveries", SUCCEEDED, hook, keep("deliveries"))
            await add("summaries", STATS_HOURS, hook, keep("summaries"))
            async with db.connection() as conn:
                mark = await conn.fetchval("SELECT bodies_through FROM prune_marks WHERE webhook_id = $1", hook)
                counts["bodies"] += await conn.fetchval(COUNT_BODIES, hook, float(keep("bodies")), mark)
        async with db.connection() as conn:
            ripe = await conn.fetchval(RIPE_NOTICE, org, float(NOTICE_AHEAD_SECONDS))
        if ripe is not None:  # only what was announced a day ago goes
            await add("deliveries", EXPIRED_DLQ, org, keep("deliveries"), ripe)
        await add("deliveries", FINISHED_CALLS, org, keep("deliveries"))
        await add("cleared_dlq", CLEARED, org, keep("cleared_dlq"))
        await add("events", EVENTS, org, max(keep("events"), keep("deliveries")))
        await add("health_checks", HEALTH_CHECKS, org, keep("health_checks"))
        await add("summaries", HEALTH_HOURS, org, keep("summaries"))
        await add("jobs", JOBS, org, keep("jobs"))
        for removal in AUDIT:
            await add("audit", removal, org, keep("audit"))
    return counts
