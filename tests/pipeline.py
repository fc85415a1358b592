"""Helpers for tests that run the delivery pipeline: an API driver and waits on delivery state."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

from app.core import db

FAST = {"strategy": "fixed", "base_delay_ms": 200, "max_delay_ms": 200, "max_retries": 3, "jitter": False}


async def hand_over(*delivery_ids) -> str:
    """What dispatch does for these deliveries, outside any cap: name a message on their rows. A test
    that drives the engine itself then calls delivery.deliver_many(ids, message id)."""
    message_id = uuid.uuid4()
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET message_id = $2, requeued_at = now() WHERE id = ANY($1::uuid[])",
            [uuid.UUID(str(i)) for i in delivery_ids],
            message_id,
        )
    return str(message_id)


async def deliver_now(*delivery_ids):
    """One attempt of these deliveries, here, as a worker would make it for the message carrying them."""
    from app.webhooks import delivery

    return await delivery.deliver_many([str(i) for i in delivery_ids], await hand_over(*delivery_ids))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def wait_until(check, timeout: float = 20.0, interval: float = 0.1):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout} s: {check.__name__}")
        await asyncio.sleep(interval)


async def delivery_of(event_id: str, webhook_id: str) -> dict | None:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM webhook_deliveries WHERE event_id = $1 AND webhook_id = $2", event_id, webhook_id
        )
    return dict(row) if row else None


async def settled(event_id: str, webhook_id: str, status: str) -> dict:
    async def reached():
        row = await delivery_of(event_id, webhook_id)
        return row if row and row["status"] == status else None

    reached.__name__ = f"delivery is {status}"
    return await wait_until(reached)


async def drained(queue_name: str = "deliveries", *, delayed: bool = False, timeout: float = 20.0) -> None:
    """Join the pipeline instead of sleeping: every event fanned out, no delivery due and unsent, and no
    message of `queue_name` ready or being processed (with `delayed`, none waiting for its time either).
    A message is acknowledged only after its actor and middleware ran (a retry it schedules is enqueued
    first), so once this returns, whatever the work was going to do has been done."""
    from app.core.redis import get_redis

    keys = [f"intime:{queue_name}.msgs", *([f"intime:{queue_name}.DQ.msgs"] if delayed else [])]

    async def quiet() -> bool:
        async with db.connection() as conn:
            # A due delivery (held or handed over) or one being sent is work still to do; with `delayed`,
            # so is a retry held for its time.
            busy = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM events WHERE fanned_out_at IS NULL) OR EXISTS (SELECT 1 "
                "FROM webhook_deliveries WHERE status = 'processing' OR (status IN ('pending', 'failed') "
                "AND ($1 OR next_attempt_at <= now())))",
                delayed,
            )
        if busy:
            return False
        for key in keys:
            if await get_redis().hlen(key):  # type: ignore[misc]
                return False
        return True

    quiet.__name__ = f"the {queue_name} queue is drained"
    await wait_until(quiet, timeout)


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            pids.extend(_process_tree(int(child)))
    return pids


@contextlib.contextmanager
def paused(worker) -> Iterator[None]:
    """The worker's processes stopped (SIGSTOP) meanwhile: what is enqueued waits in Redis, untaken."""
    pids = _process_tree(worker.pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
