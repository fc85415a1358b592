"""The pruner: removes what is past its retention, in bounded batches, safe in several copies.

Every statement removes at most `INTIME_PRUNE_BATCH` rows it locked with `FOR UPDATE SKIP LOCKED`, in
its own short transaction: no long lock, nothing a worker waits for, and two schedulers pruning at
once split the rows instead of fighting over them. Each reads an index that leads with the
organisation or webhook it prunes for, so an organisation that keeps its records longer costs the
others nothing (a global scan by age would re-read its rows on every pass).

What goes, per organisation (its retention, app.lifecycle.retention):
- bodies: after `bodies`, an attempt's response body (it keeps status, headers and timings). A mark
  per webhook says how far this has gone, so no attempt is read twice.
- deliveries: succeeded ones after `deliveries`, with their attempts; dead-lettered ones nobody
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

log = logging.getLogger("intime.prune")

NOTICE_AHEAD_SECONDS = DAY
"""Uncleared DLQ items are announced this long before they go."""

# --- statements ($1: organisation or webhook, $2: retention in seconds, $3: batch) -----------------------

_AGE = "now() - make_interval(secs => $2::float8)"


@dataclass(frozen=True)
class Removal:
    """A bounded removal: the rows of `source` matching `where`, oldest first by `order`, a batch at a
    time, locked with SKIP LOCKED. `returning` and `then` let a removal carry its rows on (summaries).

    The batch is taken first as an array (`= ANY(ARRAY(...))`), so the DELETE finds its rows by key;
    as `IN (subquery)` the planner may join it to the whole table instead (tests/test_query_plans.py)."""

    source: str  # the table and its alias
    key: str  # what names a row (id or ctid)
    where: str
    order: str
    returning: str = "1"
    then: str = ""

    def _select(self, limit: str, lock: str) -> str:
        return f"SELECT {self.key} FROM {self.source} WHERE {self.where} ORDER BY {self.order} LIMIT {limit} {lock}"  # noqa: S608

    @property
    def delete(self) -> str:
        alias = self.source.split()[-1]
        table = self.source.split()[0]
        lock = f"FOR UPDATE OF {alias} SKIP LOCKED"
        return (
            f"WITH gone AS (DELETE FROM {table} "  # noqa: S608
            f"WHERE {self.key.split('.')[-1]} = ANY(ARRAY({self._select('$3', lock)})) "
            f"RETURNING {self.returning}){self.then} SELECT count(*) FROM gone"
        )

    @property
    def count(self) -> str:
        """How many a pass would remove now (at most COUNT_CAP); $3 is ignored."""
        return f"SELECT count(*) FROM ({self._select(f'{COUNT_CAP} + 0 * $3::int', '')}) selection"  # noqa: S608


COUNT_CAP = 1_000_000

SUCCEEDED = Removal(
    "webhook_deliveries d",
    "d.id",
    f"d.webhook_id = $1 AND d.created_at < {_AGE} AND d.status = 'success'",
    "d.created_at",
)
CLEARED = Removal(
    "webhook_deliveries d",
    "d.id",
    f"d.org_id = $1 AND d.status = 'dlq' AND d.cleared_at IS NOT NULL AND d.cleared_at < {_AGE}",
    "d.cleared_at",
)
# $4: up to when this organisation's DLQ items were announced; only those go.
EXPIRED_DLQ = Removal(
    "webhook_deliveries d",
    "d.id",
    f"d.org_id = $1 AND d.status = 'dlq' AND d.cleared_at IS NULL AND d.dlq_at < {_AGE} AND d.dlq_at <= $4",
    "d.dlq_at",
)
# Events: none while a delivery of theirs is kept, none before fan-out made its deliveries.
EVENTS = Removal(
    "events e",
    "e.id",
    f"e.org_id = $1 AND e.created_at < {_AGE} AND e.fanned_out_at IS NOT NULL "  # noqa: S608
    # Asked per candidate through the event index: as NOT EXISTS the planner may hash the whole
    # deliveries table against the batch instead (an anti-join; tests/test_query_plans.py).
    "AND (SELECT d.id FROM webhook_deliveries d WHERE d.event_id = e.id LIMIT 1) IS NULL",
    "e.created_at",
)
# Health checks go into their hour's summary as they go.
HEALTH_CHECKS = Removal(
    "health_checks h",
    "h.id",
    f"h.org_id = $1 AND h.at < {_AGE}",
    "h.at",
    returning="provider_id, org_id, at, ok, latency_ms",
    then=""", summed AS (
    INSERT INTO health_check_hours (provider_id, org_id, hour, checks, ok, latency_ms_sum, latency_ms_max)
    SELECT provider_id, org_id, date_trunc('hour', at), count(*), count(*) FILTER (WHERE ok),
           coalesce(sum(latency_ms), 0), max(latency_ms)
    FROM gone GROUP BY provider_id, org_id, date_trunc('hour', at)
    ON CONFLICT (provider_id, hour) DO UPDATE SET
        checks = health_check_hours.checks + excluded.checks, ok = health_check_hours.ok + excluded.ok,
        latency_ms_sum = health_check_hours.latency_ms_sum + excluded.latency_ms_sum,
        latency_ms_max = greatest(health_check_hours.latency_ms_max, excluded.latency_ms_max))""",
)
HEALTH_HOURS = Removal("health_check_hours s", "s.ctid", f"s.org_id = $1 AND s.hour < {_AGE}", "s.hour")
STATS_HOURS = Removal("webhook_stats_hourly s", "s.id", f"s.webhook_id = $1 AND s.hour < {_AGE}", "s.hour")
JOBS = Removal(
    "jobs j", "j.id", f"j.org_id = $1 AND j.created_at < {_AGE} AND j.finished_at IS NOT NULL", "j.created_at"
)
AUDIT = (
    Removal("failover_events f", "f.id", f"f.org_id = $1 AND f.at < {_AGE}", "f.at"),
    Removal("oauth_connection_events o", "o.id", f"o.org_id = $1 AND o.at < {_AGE}", "o.at"),
    Removal("erasures x", "x.id", f"x.org_id = $1 AND x.at < {_AGE}", "x.at"),
)

# The DLQ announcement: at most once an hour per organisation, what reaches its retention within the
# next NOTICE_WINDOW and was dead-lettered after the last announcement. An item goes only once it was
# announced at least NOTICE_AHEAD ago, so every one is announced a day (to a day and an hour) before.
# One announcer per organisation at a time: a transaction-scoped advisory lock keyed by it.
LOCK_NOTICES = "SELECT pg_try_advisory_xact_lock(hashtextextended('intime:dlq_notice:' || $1::uuid::text, 0))"
LAST_NOTICE = "SELECT max(through) AS through, max(announced_at) AS at FROM dlq_notices WHERE org_id = $1"
EXPIRING = """
SELECT webhook_id, count(*) AS n, min(dlq_at) AS first, max(dlq_at) AS last FROM webhook_deliveries
WHERE org_id = $1 AND status = 'dlq' AND cleared_at IS NULL AND dlq_at > coalesce($3, '-infinity'::timestamptz)
  AND dlq_at < now() - make_interval(secs => $2::float8)
GROUP BY webhook_id
"""
ADD_NOTICE = "INSERT INTO dlq_notices (org_id, through, announced_at) VALUES ($1, $2, now()) ON CONFLICT DO NOTHING"
# Up to when this organisation's items were announced long enough ago to go; older notices than that
# one are no longer needed.
RIPE_NOTICE = (
    "SELECT max(through) FROM dlq_notices WHERE org_id = $1 AND announced_at <= now() - make_interval(secs => $2)"
)
FORGET_NOTICES = "DELETE FROM dlq_notices WHERE org_id = $1 AND through < $2"

# Bodies: the webhook's deliveries created after its mark and before the cut-off, a batch at a time by
# creation time (the history index); ties at the batch's last instant are taken whole.
ENSURE_MARK = "INSERT INTO prune_marks (webhook_id, bodies_through) VALUES ($1, '-infinity') ON CONFLICT DO NOTHING"
LOCK_MARK = "SELECT bodies_through FROM prune_marks WHERE webhook_id = $1 FOR UPDATE SKIP LOCKED"
BODIES_UNTIL = f"""
SELECT max(created_at) FROM (
    SELECT created_at FROM webhook_deliveries
    WHERE webhook_id = $1 AND created_at > $4 AND created_at < {_AGE}
    ORDER BY created_at LIMIT $3) batch
"""  # noqa: S608
STRIP_BODIES = """
WITH stripped AS (
    UPDATE delivery_attempts a SET response_body = NULL, body_removed = 'retention'
    FROM webhook_deliveries d
    WHERE d.webhook_id = $1 AND d.created_at > $2 AND d.created_at <= $3
      AND a.delivery_id = d.id AND a.response_body IS NOT NULL
    RETURNING 1)
SELECT count(*) FROM stripped
"""
COUNT_BODIES = f"""
SELECT count(*) FROM delivery_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE d.webhook_id = $1 AND d.created_at > coalesce($3::timestamptz, '-infinity') AND d.created_at < {_AGE}
  AND a.response_body IS NOT NULL
"""  # noqa: S608
SET_MARK = "UPDATE prune_marks SET bodies_through = $2 WHERE webhook_id = $1"

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
    return sum([await _strip_bodies(hook, seconds) for hook in scope.webhooks])


@_kind("deliveries")
async def _deliveries(scope: Scope) -> int:
    seconds = scope.keep.seconds("deliveries")
    removed = sum([await _drain(SUCCEEDED, hook, seconds) for hook in scope.webhooks])
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
        await add("cleared_dlq", CLEARED, org, keep("cleared_dlq"))
        await add("events", EVENTS, org, max(keep("events"), keep("deliveries")))
        await add("health_checks", HEALTH_CHECKS, org, keep("health_checks"))
        await add("summaries", HEALTH_HOURS, org, keep("summaries"))
        await add("jobs", JOBS, org, keep("jobs"))
        for removal in AUDIT:
            await add("audit", removal, org, keep("audit"))
    return counts
