"""Delivery statistics per webhook: hourly rollups written with each attempt, read by the debugger.

Percentiles over millions of attempts cannot be computed per page view in 50 ms, so every recorded
attempt adds itself to its (webhook, hour) row: counts and a latency histogram. The debugger reads at
most 168 rows for a week; p50 / p95 are interpolated inside the histogram bucket (so they are
estimates, shown as such, with buckets fine enough to tell 40 ms from 400 ms).
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.core import db

# Bounds in ms of the latency buckets ([0, 10), [10, 25), ...); an open-ended bucket follows the last.
BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
BUCKET_COUNT = len(BUCKETS_MS) + 1


def bucket_of(duration_ms: int) -> int:
    """1-based (PostgreSQL arrays) index of the bucket that holds this duration."""
    return bisect_right(BUCKETS_MS, duration_ms) + 1


# Only for webhooks that still exist: an organisation deleted since the attempt takes its webhooks with
# it, and one row that can never be written must not hold back all the others, flush after flush.
FLUSH_SQL = """
INSERT INTO webhook_stats_hourly AS s (webhook_id, hour, deliveries, attempts, successes, failures, latency_buckets)
SELECT $1, $2, $3, $4, $5, $6, $7::int[] WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = $1)
ON CONFLICT (webhook_id, hour) DO UPDATE SET
    deliveries = s.deliveries + excluded.deliveries, attempts = s.attempts + excluded.attempts,
    successes = s.successes + excluded.successes, failures = s.failures + excluded.failures,
    latency_buckets = ARRAY(
        SELECT coalesce(a, 0) + coalesce(b, 0)
        FROM unnest(s.latency_buckets, excluded.latency_buckets) WITH ORDINALITY AS t(a, b, i) ORDER BY i)
"""


class Buffer:
    """Counts attempts in the process and writes them once a second, one row per (webhook, hour).

    Written inside each attempt's transaction, the hourly row of a busy webhook became the one row
    every worker waited for (measured: about 100 deliveries/s for 10 webhooks). Buffered, a second of
    figures can be lost with a killed process; `intime stats rebuild` recomputes them from the attempts.
    """

    def __init__(self) -> None:
        self.pending: dict[tuple[uuid.UUID, datetime], list] = {}

    def add(self, webhook_id: uuid.UUID, at: datetime, *, success: bool, first: bool, duration_ms: int | None) -> None:
        key = (webhook_id, at.replace(minute=0, second=0, microsecond=0))
        row = self.pending.get(key)
        if row is None:
            row = self.pending[key] = [0, 0, 0, 0, [0] * BUCKET_COUNT]
        row[0] += int(first)
        row[1] += 1
        row[2 if success else 3] += 1
        if duration_ms is not None:
            row[4][bucket_of(duration_ms) - 1] += 1

    async def flush(self) -> int:
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        rows = [(webhook, hour, *counts[:4], counts[4]) for (webhook, hour), counts in sorted(batch.items())]
        try:
            async with db.connection() as conn:
                await conn.executemany(FLUSH_SQL, rows)
        except Exception:
            # Keep the counts for the next flush rather than lose them to a passing database error.
            for (webhook, hour), counts in batch.items():
                self.add_counts(webhook, hour, counts)
            raise
        return len(rows)

    def add_counts(self, webhook_id: uuid.UUID, hour: datetime, counts: list) -> None:
        row = self.pending.setdefault((webhook_id, hour), [0, 0, 0, 0, [0] * BUCKET_COUNT])
        for index in range(4):
            row[index] += counts[index]
        row[4] = [a + b for a, b in zip(row[4], counts[4], strict=True)]


BUFFER = Buffer()


def record_attempt(webhook_id: uuid.UUID, at: datetime, *, success: bool, first: bool, duration_ms: int | None) -> None:
    """Count one attempt (written by the next flush of this process)."""
    BUFFER.add(webhook_id, at, success=success, first=first, duration_ms=duration_ms)


async def flush() -> int:
    return await BUFFER.flush()


def percentile(buckets: list[int], q: float) -> int | None:
    """The q-quantile (0..1) of a histogram, linear inside the bucket; None without data."""
    total = sum(buckets)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = BUCKETS_MS[index - 1] if index > 0 else 0
            if index >= len(BUCKETS_MS):
                return low  # the open bucket: "more than a minute"
            high = BUCKETS_MS[index]
            return round(low + (high - low) * (rank - seen) / count)
        seen += count
    return BUCKETS_MS[-1]


@dataclass
class Window:
    hours: int
    deliveries: int
    attempts: int
    successes: int
    failures: int
    p50_ms: int | None
    p95_ms: int | None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.attempts if self.attempts else None


@dataclass
class Hour:
    hour: datetime
    successes: int
    failures: int
    p50_ms: int | None
    p95_ms: int | None


def _add(a: list[int], b: list[int] | None) -> list[int]:
    b = list(b or [])
    return [x + (b[i] if i < len(b) and b[i] else 0) for i, x in enumerate(a)]


async def load(webhook_id: uuid.UUID, hours: int) -> tuple[Window, list[Hour]]:
    """The window's totals and one row per hour (gaps filled with zeros), oldest first."""
    now = datetime.now(UTC)
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT hour, deliveries, attempts, successes, failures, latency_buckets FROM webhook_stats_hourly "
            "WHERE webhook_id = $1 AND hour >= $2 ORDER BY hour",
            webhook_id,
            start,
        )
    by_hour = {row["hour"]: row for row in rows}
    total = [0] * BUCKET_COUNT
    sums = {"deliveries": 0, "attempts": 0, "successes": 0, "failures": 0}
    series = []
    for n in range(hours):
        at = start + timedelta(hours=n)
        row = by_hour.get(at)
        buckets = _add([0] * BUCKET_COUNT, row["latency_buckets"] if row else None)
        total = _add(total, buckets)
        if row:
            for key in sums:
                sums[key] += row[key]
        series.append(
            Hour(
                at,
                row["successes"] if row else 0,
                row["failures"] if row else 0,
                percentile(buckets, 0.5),
                percentile(buckets, 0.95),
            )
        )
    window = Window(hours, p50_ms=percentile(total, 0.5), p95_ms=percentile(total, 0.95), **sums)
    return window, series


REBUILD_SQL = """
WITH a AS (
    SELECT date_trunc('hour', da.started_at) AS hour, da.outcome = 'success' AS ok, da.attempt_number = 1 AS first,
           CASE WHEN da.response_status IS NULL THEN NULL ELSE width_bucket(da.duration_ms, $2::int[]) + 1 END AS b
    FROM delivery_attempts da JOIN webhook_deliveries d ON d.id = da.delivery_id
    WHERE d.webhook_id = $1
), counts AS (
    SELECT hour, b, count(*)::int AS c FROM a WHERE b IS NOT NULL GROUP BY hour, b
), hist AS (
    SELECT h.hour, array_agg(coalesce(c.c, 0) ORDER BY i) AS buckets
    FROM (SELECT DISTINCT hour FROM a) AS h CROSS JOIN generate_series(1, $3) AS i
    LEFT JOIN counts c ON c.hour = h.hour AND c.b = i
    GROUP BY h.hour
), totals AS (
    SELECT hour, count(*) FILTER (WHERE first)::int AS deliveries, count(*)::int AS attempts,
           count(*) FILTER (WHERE ok)::int AS successes FROM a GROUP BY hour
)
INSERT INTO webhook_stats_hourly (webhook_id, hour, deliveries, attempts, successes, failures, latency_buckets)
SELECT $1, t.hour, t.deliveries, t.attempts, t.successes, t.attempts - t.successes, h.buckets
FROM totals t JOIN hist h USING (hour)
"""


async def rebuild(webhook_id: uuid.UUID) -> int:
    """Recompute a webhook's hourly stats from its attempts (after a bulk import, or to repair)."""
    async with db.connection() as conn, conn.transaction():
        await conn.execute("DELETE FROM webhook_stats_hourly WHERE webhook_id = $1", webhook_id)
        await conn.execute(REBUILD_SQL, webhook_id, list(BUCKETS_MS), BUCKET_COUNT)
        return await conn.fetchval("SELECT count(*) FROM webhook_stats_hourly WHERE webhook_id = $1", webhook_id)
