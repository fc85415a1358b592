"""Background integration calls survive what Redis loses (issue 13, finding 9): every call has a row in
PostgreSQL from enqueue to outcome, and the scheduler's sweep re-sends a call whose message is gone or
takes over one whose worker died. Real PostgreSQL and Redis, a real worker, providers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import timedelta

import dramatiq

from app.core import db, queue
from app.core.redis import get_redis
from app.integrations import call_rows, calls
from app.integrations.background import attempt_call
from tests.pipeline import paused, wait_until
from tests.receiver import Answer


async def waiting_calls() -> int:
    """call_provider messages waiting in Redis (the scheduler also enqueues health checks there)."""
    raw = await get_redis().hvals("intime:integrations.msgs")  # type: ignore[misc]
    return sum(dramatiq.Message.decode(str(message).encode()).actor_name == "call_provider" for message in raw)


async def rows_of(integration: uuid.UUID) -> dict[str, dict]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM integration_calls WHERE integration_id = $1", integration)
    return {row["call_id"]: dict(row) for row in rows}


async def integration_with_provider(factory, receiver) -> uuid.UUID:
    org = await factory.org()
    integration = await factory.integration(org.id, "SMS", "sms")
    await factory.provider(integration, "Twilio", receiver.url, receiver.url, priority=1, credentials="tw-key")
    return integration


async def sent(receiver, count: int) -> list:
    """The calls that reached the provider, once `count` have (its health checks, GETs, aside)."""

    async def arrived():
        got = [request for request in receiver.log if request.path == "/hook/send"]
        return got if len(got) >= count else None

    arrived.__name__ = f"{count} calls reached the provider"
    return await wait_until(arrived, timeout=30)


def settled(integration: uuid.UUID, count: int, status: str = "succeeded"):
    async def check() -> bool:
        rows = await rows_of(integration)
        return len(rows) == count and all(row["status"] == status for row in rows.values())

    check.__name__ = f"{count} calls {status}"
    return check


async def test_calls_enqueued_before_a_redis_wipe_still_reach_the_provider_and_succeed(
    factory, receiver, worker_process, scheduler
):
    # Given a provider, and calls enqueued while no worker takes them
    integration = await integration_with_provider(factory, receiver)
    with paused(worker_process):
        call_ids = [await calls.enqueue_call(integration, "send", {"n": n}) for n in range(5)]
        # When Redis is wiped before any of them runs
        assert await waiting_calls() == 5
        await get_redis().flushdb()
    # Then the scheduler's sweep (grace 1 s here) sends them again from their rows: each reaches the
    # provider under its own Idempotency-Key, with its payload, and its row ends succeeded
    arrived = await sent(receiver, 5)
    await wait_until(settled(integration, 5), timeout=10)
    keys = [request.headers["idempotency-key"] for request in arrived]
    assert sorted(set(keys)) == sorted(call_ids)
    assert {key: json.loads(r.body)["n"] for key, r in zip(keys, arrived, strict=True)} == {
        call_id: n for n, call_id in enumerate(call_ids)
    }
    rows = await rows_of(integration)
    assert {(row["provider_name"], row["status_code"]) for row in rows.values()} == {("Twilio", 200)}


async def test_a_retry_waiting_in_redis_when_it_is_wiped_is_still_made(factory, receiver, worker_process):
    from tasks.scheduler import Scheduler

    # Given a call the provider failed once, whose retry waits in Redis for its backoff (5 s)
    integration = await integration_with_provider(factory, receiver)
    receiver.then(Answer(status=503))
    await calls.enqueue_call(integration, "send", {"to": "+15550100"}, call_id="order-9")
    await sent(receiver, 1)
    await wait_until(settled(integration, 1, "failed"), timeout=10)
    # When Redis is wiped
    await get_redis().flushdb()
    # Then the scheduler's sweep (grace 1 s here) sends it once its row says it is due, under the same key
    sweeper = Scheduler(sweep_grace=timedelta(seconds=1))

    async def swept_and_made():
        await sweeper.sweep_calls()
        return await settled(integration, 1)()

    await wait_until(swept_and_made, timeout=30, interval=0.5)
    arrived = await sent(receiver, 2)
    assert [r.headers["idempotency-key"] for r in arrived] == ["order-9", "order-9"]
    row = (await rows_of(integration))["order-9"]
    assert (row["attempts"], row["failures"]) == (2, 1)


async def test_a_call_whose_worker_died_mid_call_is_taken_over_when_its_lease_runs_out(
    factory, receiver, worker_process
):
    from tasks.scheduler import Scheduler

    # Given a call a worker is making (the provider holds its answer), and the worker dies mid-call
    integration = await integration_with_provider(factory, receiver)
    receiver.then(Answer(delay=5))
    row_id, _, _ = await calls.record_call(integration, "send", {"to": "+15550100"}, call_id="order-10")
    dying = asyncio.create_task(attempt_call(row_id))
    await sent(receiver, 1)
    dying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    [row] = (await rows_of(integration)).values()
    assert (row["status"], row["attempts"]) == ("running", 1)
    # When its lease runs out (150 s later; here: moved into the past) and the scheduler sweeps
    scheduler = Scheduler()
    assert await scheduler.sweep_calls() == 0  # a live lease is the worker's
    async with db.connection() as conn:
        await conn.execute("UPDATE integration_calls SET lease_expires_at = now() - interval '1 s'")
    assert await scheduler.sweep_calls() == 1
    # Then the lost attempt counts as a failure, and the retry after its backoff reaches the provider
    # under the same key and succeeds
    row = (await rows_of(integration))["order-10"]
    assert (row["status"], row["failures"], row["last_error"]) == ("failed", 1, call_rows.LOST_ATTEMPT)
    arrived = await sent(receiver, 2)
    await wait_until(settled(integration, 1), timeout=10)
    assert [r.headers["idempotency-key"] for r in arrived] == ["order-10", "order-10"]
    assert await scheduler.sweep_calls() == 0


async def test_a_message_from_before_calls_were_rows_is_made_and_recorded(factory, receiver, worker_process):
    # Given a message of the old shape, carrying the whole call, left in Redis by the previous version
    integration = await integration_with_provider(factory, receiver)
    await queue.asend("call_provider", str(integration), "send", {"to": "+15550100"}, "legacy-1", 2, None, 1)
    # Then the worker makes it, and its row keeps its counts and its outcome
    [request] = await sent(receiver, 1)
    assert request.headers["idempotency-key"] == "legacy-1"
    await wait_until(settled(integration, 1), timeout=10)
    row = (await rows_of(integration))["legacy-1"]
    assert (row["deferrals"], row["failures"], row["attempts"]) == (2, 1, 1)


async def test_the_sweep_resends_only_what_is_overdue_by_the_database_clock_and_not_twice(factory, receiver):
    from app.integrations import call_sweep

    # Given calls whose messages are gone: one due 5 s ago, one due in a minute, one done
    integration = await integration_with_provider(factory, receiver)
    ids = {}
    for call_id, due in (("overdue", -5), ("later", 60), ("done", -5)):
        ids[call_id], _, _ = await calls.record_call(integration, "send", {}, call_id=call_id)
        async with db.connection() as conn:
            await conn.execute(
                "UPDATE integration_calls SET next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
                ids[call_id],
                due,
            )
    async with db.connection() as conn:
        await conn.execute("UPDATE integration_calls SET status = 'succeeded' WHERE id = $1", ids["done"])
    # When the sweep runs twice with a grace of 1 s
    first = await call_sweep.sweep(grace=timedelta(seconds=1))
    second = await call_sweep.sweep(grace=timedelta(seconds=1))
    # Then only the overdue one is re-sent, now, and not again until SWEEP_RECHECK has passed
    assert first == [(ids["overdue"], None)]
    assert second == []


async def test_a_message_that_comes_before_its_call_is_due_is_sent_again_for_then(factory, receiver):
    # Given a call due in 10 s by PostgreSQL's clock (another machine's clock sent its message early)
    integration = await integration_with_provider(factory, receiver)
    row_id, _, _ = await calls.record_call(integration, "send", {}, call_id="early")
    async with db.connection() as conn:
        await conn.execute("UPDATE integration_calls SET next_attempt_at = now() + interval '10 s'")
    # When the message is taken, the call is not made, but woken again for when it is due
    delay_ms = await attempt_call(row_id)
    assert delay_ms is not None and 9_000 < delay_ms <= 10_000
    assert receiver.log == [] and await waiting_calls() == 0  # a delayed message (DQ), not a ready one
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT status FROM integration_calls WHERE id = $1", row_id) == "queued"
    delayed = await get_redis().hvals("intime:integrations.DQ.msgs")  # type: ignore[misc]
    assert [list(dramatiq.Message.decode(str(m).encode()).args) for m in delayed] == [[str(row_id)]]
