"""The engine's queries over webhook_deliveries read the index made for them (real PostgreSQL, EXPLAIN).

What waits for a disabled webhook is counted and drained to the DLQ by the sweep every second. The
index of waiting deliveries holds only those rows, so both stay cheap however long the history is.
Without it the planner falls back to the whole table, because the other indexes that lead with
webhook_id cover every row. The bench measured that fallback: the drain ran for 90 s over 80,000
delivered rows and took PostgreSQL from 0.3 to 1.3 ms of CPU per delivery. Sequential scans are
priced out here so that the plan shows which index the query can use at all.
"""

from __future__ import annotations

import uuid

import pytest

from app.core import db
from app.webhooks import statements

WAITING_INDEX = "webhook_deliveries_waiting_idx"


async def _plan(sql: str, *args) -> str:
    async with db.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize(
    ("name", "sql", "args"),
    [
        ("what waits for a disabled webhook", statements.COUNT_WAITING, (uuid.uuid4(),)),
        ("the next batch to drain to the DLQ", statements.DRAIN_STOPPED, (1000,)),
    ],
)
async def test_waiting_deliveries_are_read_from_the_index_of_waiting_ones(name, sql, args):
    plan = await _plan(sql, *args)
    assert WAITING_INDEX in plan, f"{name}: not read from {WAITING_INDEX}\n{plan}"
