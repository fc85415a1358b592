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


RECORD_SQL = """
INSERT INTO webhook_stats_hourly AS s (webhook_id, hour, deliveries, attempts, successes, failures, latency_buckets)
VALUES ($1, date_trunc('hour', $2::timestamptz), $3, 1, $4, $5, array_fill(0, ARRAY[$6::int]))
ON CONFLICT (webhook_id, hour) DO UPDATE SET
    deliveries = s.deliveries + excluded.deliveries, attempts = s.attempts + 1,
    successes = s.successes + excluded.successes, failures = s.failures + excluded.failures
"""
BUCKET_SQL = """
UPDATE webhook_stats_hourly SET latency_buckets[$3] = coalesce(latency_buckets[$3], 0) + 1
WHERE webhook_id = $1 AND hour = date_trunc('hour', $2::timestamptz)
"""


async def record_attempt(
    conn, webhook_id: uuid.UUID, at: datetime, *, success: bool, first: bool, duration_ms: int | None
) -> None:
    """Count one attempt, inside the caller's transaction (the one that records the attempt)."""
    await conn.execute(RECORD_SQL, webhook_id, at, int(first), int(success), int(not success), BUCKET_COUNT)
    if duration_ms is not None:
        await conn.execute(BUCKET_SQL, webhook_id, at, bucket_of(duration_ms))


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
