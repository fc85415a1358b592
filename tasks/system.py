"""Operational actors of the portal itself."""

from __future__ import annotations

import dramatiq

from app.core import heartbeat as heartbeats


@dramatiq.actor(queue_name="system", max_retries=0, time_limit=10_000)
async def heartbeat() -> None:
    """Sent by the scheduler every few seconds; the overview page shows when a worker last ran one."""
    await heartbeats.beat("worker")
