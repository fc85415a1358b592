"""Synthetic delivery history for load tests and demos (`intime seed deliveries`), and the stats rebuild.

A million deliveries are written by a few set-based statements (events, deliveries, one attempt each),
spread over the last `days`, about 95 % successful; the hourly stats are then rebuilt from the attempts.
"""

from __future__ import annotations

import uuid

from app.core import db
from app.webhooks.stats import BUCKET_COUNT, BUCKETS_MS

SEED_SQL = """
WITH ev AS (
    INSERT INTO events (id, org_id, event_type, payload, metadata, created_at, fanned_out_at)
    SELECT gen_random_uuid(), $1,
           (ARRAY['job.created', 'job.closed', 'submission.created', 'interview.scheduled'])[1 + g % 4],
           jsonb_build_object('n', g, 'seeded', true), '{}'::jsonb,
           now() - make_interval(secs => ($6 + (g::float8 / $4) * $5) * 86400), now()
    FROM generate_series(1, $4) AS g
    RETURNING id, event_type, created_at
), picked AS (
    SELECT ev.*, CASE WHEN abs(hashtext(ev.id::text)) % 100 < 95 THEN 'success' ELSE 'dlq' END AS status,
           CASE WHEN abs(hashtext(ev.id::text)) % 100 < 95 THEN 200 ELSE 400 END AS code
    FROM ev
), d AS (
    INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, event_type, status, attempt_count,
                                    last_status_code, last_error, dlq_reason, dlq_at, created_at, updated_at,
                                    completed_at)
    SELECT gen_random_uuid(), $1, $2, p.id, p.event_type, p.status, 1, p.code,
           CASE WHEN p.status = 'dlq' THEN 'HTTP 400' END, CASE WHEN p.status = 'dlq' THEN 'non_retryable' END,
           CASE WHEN p.status = 'dlq' THEN p.created_at END, p.created_at, p.created_at,
           CASE WHEN p.status = 'success' THEN p.created_at END
    FROM picked p
    RETURNING id, created_at, status, last_status_code
)
INSERT INTO delivery_attempts (id, delivery_id, attempt_number, trigger, started_at, duration_ms, request_url,
                               request_headers, response_status, response_body, outcome)
SELECT gen_random_uuid(), d.id, 1, 'scheduled', d.created_at, (20 + random() * random() * 600)::int, $3,
       '{}'::jsonb, d.last_status_code, 'ok', CASE WHEN d.status = 'success' THEN 'success' ELSE 'non_retryable' END
FROM d
"""

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


async def rebuild_stats(webhook_id: uuid.UUID) -> int:
    """Recompute a webhook's hourly stats from its attempts (after a bulk import, or to repair)."""
    async with db.connection() as conn, conn.transaction():
        await conn.execute("DELETE FROM webhook_stats_hourly WHERE webhook_id = $1", webhook_id)
        await conn.execute(REBUILD_SQL, webhook_id, list(BUCKETS_MS), BUCKET_COUNT)
        return await conn.fetchval("SELECT count(*) FROM webhook_stats_hourly WHERE webhook_id = $1", webhook_id)


async def seed_deliveries(webhook_id: uuid.UUID, count: int, days: float = 7.0, batch: int = 100_000) -> int:
    async with db.connection() as conn:
        row = await conn.fetchrow("SELECT org_id, url FROM webhooks WHERE id = $1", webhook_id)
    if row is None:
        raise ValueError(f"no webhook {webhook_id}")
    done = 0
    while done < count:
        size = min(batch, count - done)
        # Each batch covers its own slice of the time span, so the history is spread evenly.
        async with db.connection() as conn, conn.transaction():
            await conn.execute(
                SEED_SQL, row["org_id"], webhook_id, row["url"], size, days * size / count, days * done / count
            )
        done += size
    await rebuild_stats(webhook_id)
    async with db.connection() as conn:
        await conn.execute("ANALYZE webhook_deliveries; ANALYZE delivery_attempts; ANALYZE events")
    return done
