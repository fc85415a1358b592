"""What the pruner removes, as SQL: each kind's bounded statements (app.lifecycle.prune runs them).

Parameters throughout: $1 the organisation or webhook pruned for, $2 its retention in seconds, $3 the
batch. Each selection reads an index that leads with $1 (tests/test_query_plans.py holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass

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
# Finished background integration calls go with the deliveries (the same retention).
FINISHED_CALLS = Removal(
    "integration_calls c",
    "c.id",
    f"c.org_id = $1 AND c.created_at < {_AGE} AND c.status IN ('succeeded', 'rejected', 'abandoned')",
    "c.created_at",
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
