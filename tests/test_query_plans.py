"""The engine's queries over webhook_deliveries have an index to read (real PostgreSQL, EXPLAIN): with
sequential scans priced out, a plan that still scans the whole table means no index serves the query,
and on a table of millions of deliveries that query would stall whoever waits for it."""

from __future__ import annotations

import uuid

import pytest

from app.core import db
from app.webhooks import statements


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
async def test_waiting_deliveries_are_found_by_index(name, sql, args):
    plan = await _plan(sql, *args)
    assert "Seq Scan on webhook_deliveries" not in plan, f"{name}: no index serves it\n{plan}"
