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

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from app.core import db
from app.webhooks import statements

WAITING_INDEX = "webhook_deliveries_waiting_idx"


@contextlib.asynccontextmanager
async def _rolled_back() -> AsyncIterator[Any]:
    """A connection whose rows are rolled back after: the plans see them, the next test does not."""
    async with db.connection() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        finally:
            await tx.rollback()


async def _org(conn, name: str = "plans") -> uuid.UUID:
    return await conn.fetchval(
        "INSERT INTO organizations (slug, name) VALUES ($1, $2) RETURNING id", f"{name}-{uuid.uuid4()}", name
    )


async def _webhook(conn, org: uuid.UUID, enabled: bool = True) -> uuid.UUID:
    return await conn.fetchval(
        "INSERT INTO webhooks (org_id, name, url, enabled) VALUES ($1, 'h', 'http://127.0.0.1:9/', $2) RETURNING id",
        org,
        enabled,
    )


async def _plan_under_load(sql: str, *args) -> str:
    """The plan with the table as the planner sees it under load: 50,000 deliveries, a fifth waiting,
    and a disabled webhook (rolled back after)."""
    async with _rolled_back() as conn:
        org = await _org(conn)
        hooks = [await _webhook(conn, org, enabled) for enabled in (True, False)]
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


async def _plan_with_stale_state_indexes(sql: str, *args) -> str:
    """The plan as the workers' statements get it while deliveries stream through: the partial indexes
    of states (waiting, handed over, held, leased) were analysed nearly empty, but the table churns
    through them, so they hold many entries (most of them dead) that their statistics do not show."""
    async with _rolled_back() as conn:
        org = await _org(conn)
        hook = await _webhook(conn, org)
        await conn.execute(
            "WITH e AS (INSERT INTO events (org_id, event_type) SELECT $1, 'job.created' "
            "FROM generate_series(1, 20000) RETURNING id) "
            "INSERT INTO webhook_deliveries (org_id, webhook_id, event_id, event_type, status) "
            "SELECT $1, $2, e.id, 'job.created', 'success' FROM e",
            org,
            hook,
        )
        await conn.execute("ANALYZE webhook_deliveries")
        rows = await conn.fetch(f"EXPLAIN {sql}", *args)
    return "\n".join(row[0] for row in rows)


_ids = [uuid.uuid4() for _ in range(20)]


@pytest.mark.parametrize(
    ("name", "sql", "args"),
    [
        ("the claim", statements.CLAIM, (_ids, 5, uuid.uuid4())),
        (
            "recording successes",
            statements.RECORD_SUCCESSES,
            (*([None] * 12), []),
        ),
        ("noting a failed answer", statements.NOTE_FAILED_ANSWER, (_ids[0], 1, 503, "x")),
        ("locking for the retry decision", statements.LOCK_FOR_DECISION, (_ids[0], 1)),
        ("moving to the DLQ", statements.TO_DLQ, (_ids[0], "exhausted", 0, 1)),
    ],
)
async def test_per_delivery_statements_read_only_the_primary_key(name, sql, args):
    """Under two schedulers the bench read ~10,000 index entries per claim: the planner, trusting the
    stale statistics, ANDed a bitmap of a whole partial index (a bitmap scan never prunes dead entries)
    with the primary-key lookup, and PostgreSQL's CPU per delivery rose by half. Statements that name
    their deliveries by id must find them by id alone, whatever the state indexes' statistics say."""
    plan = await _plan_with_stale_state_indexes(sql, *args)
    used = {line.split(" using ")[1].split()[0] for line in plan.splitlines() if " using webhook_deliveries" in line}
    bitmaps = {
        line.split(" on ")[1].split()[0]
        for line in plan.splitlines()
        if "Bitmap Index Scan on webhook_deliveries" in line
    }
    assert used | bitmaps <= {"webhook_deliveries_pkey"}, f"{name}: reads {used | bitmaps}\n{plan}"


async def test_dispatch_reads_each_webhooks_due_deliveries_from_its_own_index():
    """Dispatch takes each webhook's oldest due deliveries. After an ANALYZE of a backlog the planner
    read them from the index of all held deliveries by due time instead, filtering out every other
    webhook's (526 rows read per 20 taken with 10 webhooks in the bench; with a thousand it would read
    every tenant's backlog to serve one). It must use the per-webhook index, both to find which
    webhooks have due deliveries and to lock them."""
    async with _rolled_back() as conn:
        org = await _org(conn)
        hooks = [await _webhook(conn, org) for _ in range(10)]
        await conn.execute(
            "WITH e AS (INSERT INTO events (org_id, event_type) SELECT $1, 'job.created' "
            "FROM generate_series(1, 20000) g RETURNING id) "
            "INSERT INTO webhook_deliveries (org_id, webhook_id, event_id, event_type, status, next_attempt_at) "
            "SELECT $1, ($2::uuid[])[1 + (row_number() OVER () % 10)], e.id, 'job.created', 'pending', "
            "now() - interval '1 hour' + row_number() OVER () * interval '10 ms' FROM e",
            org,
            hooks,
        )
        await conn.execute("ANALYZE webhook_deliveries")
        plans = {
            name: "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *args))
            for name, sql, args in [
                ("lock", statements.LOCK_HELD, (hooks, [20] * len(hooks))),
                ("due", statements.DUE_WEBHOOKS, (uuid.UUID(int=0), 500)),
            ]
        }
    for name, plan in plans.items():
        assert "webhook_deliveries_held_by_webhook_idx" in plan, f"{name}\n{plan}"
        assert "webhook_deliveries_held_idx" not in plan, f"{name}\n{plan}"


async def test_the_pruner_and_the_dlq_page_read_the_indexes_made_for_them():
    """Issue 15: each pruning statement reads an index leading with the organisation (or webhook) it
    prunes for, and the DLQ page reads the DLQ index, which holds only uncleared items; none scans the
    table, whose size is what retention bounds."""
    from app.lifecycle import removals
    from app.webhooks import queries
    from app.webhooks.dlq import DlqFilter

    async with _rolled_back() as conn:
        org = await _org(conn)
        others = [await _org(conn, "other") for _ in range(20)]
        hook = await _webhook(conn, org)
        await conn.execute(
            "WITH e AS (INSERT INTO events (org_id, event_type, created_at, fanned_out_at) "
            "SELECT ($2::uuid[])[1 + g % 21], 'job.created', now() - g * interval '1 minute', now() "
            "FROM generate_series(1, 50000) g RETURNING id, org_id, created_at) "
            "INSERT INTO webhook_deliveries (org_id, webhook_id, event_id, event_type, status, created_at, dlq_at, "
            "cleared_at) SELECT $1, $3, e.id, 'job.created', s.status, e.created_at, "
            "CASE WHEN s.status = 'dlq' THEN e.created_at END, "
            "CASE WHEN s.status = 'dlq' AND random() < 0.5 THEN e.created_at END "
            "FROM e CROSS JOIN LATERAL (SELECT CASE WHEN random() < 0.1 THEN 'dlq' ELSE 'success' END AS status) s "
            "WHERE e.org_id = $1",
            org,
            [org, *others],
            hook,
        )
        await conn.execute("ANALYZE webhook_deliveries; ANALYZE events")
        where, args = DlqFilter().where(org)
        dlq_page = (
            f"SELECT {queries.DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "  # noqa: S608
            f"WHERE {where} ORDER BY d.dlq_at DESC, d.id DESC LIMIT 51"
        )
        cases = [
            ("the DLQ page", dlq_page, args, "webhook_deliveries_dlq_idx"),
            ("cleared DLQ items", removals.CLEARED.delete, [org, 86400.0, 2000], "webhook_deliveries_cleared_idx"),
            (
                "announced DLQ items",
                removals.EXPIRED_DLQ.delete,
                [org, 86400.0, 2000, datetime.now(UTC)],
                "webhook_deliveries_dlq_idx",
            ),
            ("events", removals.EVENTS.delete, [org, 86400.0, 2000], "events_org_created_idx"),
        ]
        plans = {}
        for name, sql, sql_args, _ in cases:
            plans[name] = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {sql}", *sql_args))
    for name, _, _, index in cases:
        wanted = index if isinstance(index, tuple) else (index,)  # either of a webhook's history indexes
        assert any(f" {one} " in plans[name] for one in wanted), f"{name}: not read from {index}\n{plans[name]}"
        assert "Seq Scan on webhook_deliveries" not in plans[name], f"{name}\n{plans[name]}"
