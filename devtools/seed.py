"""Synthetic delivery history for load tests and demos (`python -m devtools seed deliveries`).

A million deliveries are written by a few set-based statements (events, deliveries, one attempt each),
spread over the last `days`, about 95 % successful; the hourly stats are then rebuilt from the attempts.
"""

from __future__ import annotations

import uuid

from app.core import db
from app.webhooks import stats

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
    await stats.rebuild(webhook_id)
    async with db.connection() as conn:
        await conn.execute("ANALYZE webhook_deliveries; ANALYZE delivery_attempts; ANALYZE events")
    return done
