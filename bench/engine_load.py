"""Engine-under-load scenarios of `./task bench` (issue 13): the disable storm.

Disable a webhook with `waiting` deliveries waiting for a retry, while another organisation's webhook
gets a steady flow of events. Measured: the time of the disable call itself, the time until every
waiting delivery is in the DLQ, and the other webhook's delivery latency before and during the drain.

Baseline, in the same run: what a competent team would write first, one set-based UPDATE of every
waiting row inside the disable transaction (no event per delivery either, so it is not a straw man):
its call time is what an admin's click would wait for.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from bench.common import percentile
from bench.pipeline import _drain, organisation, pipeline, publish, receiver


async def _waiting_for(webhook_id: uuid.UUID, org_id: uuid.UUID, count: int) -> None:
    """`count` deliveries failed once and due for a retry in an hour: a backlog that waits."""
    from app.core import db

    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "WITH e AS (INSERT INTO events (id, org_id, event_type, payload, metadata, created_at, fanned_out_at) "
            "SELECT gen_random_uuid(), $2, 'job.created', '{}'::jsonb, '{}'::jsonb, now(), now() "
            "FROM generate_series(1, $3) RETURNING id) "
            "INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, event_type, status, next_trigger, "
            "attempt_count, next_attempt_at, created_at, updated_at) "
            "SELECT gen_random_uuid(), $2, $1, e.id, 'job.created', 'failed', 'scheduled', 1, "
            "now() + interval '1 hour', now(), now() FROM e",
            webhook_id,
            org_id,
            count,
        )


async def _dead(webhook_id: uuid.UUID) -> int:
    from app.core import db

    async with db.connection() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'dlq'", webhook_id
        )


async def _latencies(org_id, control, seconds: float, rate: int = 50) -> list[float]:
    """Events to the other organisation's webhook at `rate`/s for `seconds`: commit to arrival, ms."""
    await control.post("/_reset")
    published: list[tuple[str, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        published += await publish(org_id, max(1, rate // 10), batch=max(1, rate // 10))
        await asyncio.sleep(0.1)
    await _drain(control, len(published), timeout=60)
    arrivals = {event: at for event, _, at, *_ in (await control.get("/_arrivals")).json()}
    return [(arrivals[event] - committed) * 1000 for event, committed in published if event in arrivals]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 0.5), 1), "p99_ms": round(percentile(values, 0.99), 1)}


async def disable_storm(waiting: int) -> dict:
    from app.core import db
    from app.webhooks import services

    async with receiver() as (base, control), pipeline():
        storm_org, (storm,) = await organisation("storm", 1, base + "/storm")
        calm_org, _ = await organisation("calm", 1, base + "/calm")
        baseline_org, (baseline,) = await organisation("storm-baseline", 1, base + "/baseline")
        await _waiting_for(storm.id, storm_org.id, waiting)
        await _waiting_for(baseline.id, baseline_org.id, waiting)
        before = await _latencies(calm_org.id, control, 5)

        # The baseline: one UPDATE of every waiting row in the disabling transaction
        started = time.perf_counter()
        async with db.connection() as conn, conn.transaction():
            await conn.execute("UPDATE webhooks SET enabled = false WHERE id = $1", baseline.id)
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'dlq', dlq_reason = 'webhook_disabled', dlq_at = now(), "
                "next_attempt_at = NULL, updated_at = now() WHERE webhook_id = $1 AND status IN ('pending', 'failed')",
                baseline.id,
            )
        baseline_call_s = time.perf_counter() - started

        # Ours: the call, then the scheduler's bounded batches while the other webhook keeps receiving
        started = time.perf_counter()
        await services.set_enabled(storm_org.id, storm.id, False)
        call_s = time.perf_counter() - started
        drained_at: list[float] = []

        async def watch() -> None:
            while await _dead(storm.id) < waiting:
                await asyncio.sleep(0.1)
            drained_at.append(time.perf_counter() - started)

        watcher = asyncio.create_task(watch())
        during = await _latencies(calm_org.id, control, 5)
        await asyncio.wait_for(watcher, 300)
    return {
        "scenario": "disable storm",
        "waiting": waiting,
        "disable_call_ms": round(call_s * 1000, 1),
        "baseline_single_update_call_ms": round(baseline_call_s * 1000, 1),
        "all_in_dlq_s": round(drained_at[0], 2),
        "other_webhook_before": _summary(before),
        "other_webhook_during": _summary(during),
    }
