"""The engine's queries over webhook_deliveries read the index made for them (real PostgreSQL, EXPLAIN).

What waits for a disabled webhook is counted and drained to the DLQ by the sweep every second. The
index of waiting deliveries holds only those rows, so both stay cheap however long the history is.
Here the table is filled the way it looks under load (a fifth of 50,000 rows waiting, analysed), and
the plans must read that index. The bench found the drain, then written as a join of stopped webhooks
and their deliveries, scanning the whole table with the live statistics of a loaded bench database
(90 s a sweep over 80,000 rows); those statistics were not reproduced here, so this test guards the
index being used, and the drain's rewrite (one stopped webhook at a time) was checked with EXPLAIN
on that database.
"""

from __future__ import annotations

import uuid

import pytest

from app.core import db
from app.webhooks import statements

WAITING_INDEX = "webhook_deliveries_waiting_idx"


async def _plan_under_load(sql: str, *args) -> str:
    """The plan with the table as the planner sees it under load: 50,000 deliveries, a fifth waiting,
    and a disabled webhook (rolled back after)."""
    async with db.connection() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            org = await conn.fetchval(
                "INSERT INTO organizations (slug, name) VALUES ($1, 'plans') RETURNING id", f"plans-{uuid.uuid4()}"
            )
            hooks = [
                await conn.fetchval(
                    "INSERT INTO webhooks (org_id, name, url, enabled) VALUES ($1, 'h', 'http://127.0.0.1:9/', $2) "
                    "RETURNING id",
                    org,
                    enabled,
                )
                for enabled in (True, False)
            ]
            await conn.execute(
                "WITH e AS (INSERT INTO events (org_id, event_type) SELECT $1, 'job.created' "
                "FROM generate_series(1, 50000) RETURNING id) "
                "INSERT INTO webhook_deliveries (org_id, webhook_id, event_id, event_type, status) "
                "SELECT $1, $2, e.id, 'job.created', CASE WHEN random() < 0.2 THEN 'pending' ELSE 'success' END FROM e",
                org,
                hooks[0],
            )
            await conn.execute("ANALYZE webhook_deliveries")
            rows = await conn.fetch(f"EXPLAIN {sql}", *args)
        finally:
            await tx.rollback()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize(
    ("name", "sql", "args"),
    [
        ("what waits for a disabled webhook", statements.COUNT_WAITING, (uuid.uuid4(),)),
        ("which stopped webhooks have deliveries waiting", statements.STOPPED_WITH_WAITING, ()),
        ("the next batch to drain to the DLQ", statements.DRAIN_STOPPED, (1000, uuid.uuid4())),
    ],
)
async def test_waiting_deliveries_are_read_from_the_index_of_waiting_ones(name, sql, args):
    plan = await _plan_under_load(sql, *args)
    assert WAITING_INDEX in plan, f"{name}: not read from {WAITING_INDEX}\n{plan}"
