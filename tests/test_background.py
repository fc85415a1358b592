"""The scheduler and a real Dramatiq worker on Redis: the overview shows both alive."""

from __future__ import annotations

import asyncio

from app.core import heartbeat
from tests.factories import sign_in


async def test_scheduler_tick_reaches_a_worker_and_the_overview_shows_both(client, factory, worker_process):
    from tasks.scheduler import Scheduler

    before = await heartbeat.last_seen()
    assert not before["worker"]["alive"] and not before["scheduler"]["alive"]
    await Scheduler().tick()
    for _ in range(600):  # the worker boots meanwhile; the message waits in Redis for it
        if (await heartbeat.last_seen())["worker"]["alive"]:
            break
        await asyncio.sleep(0.05)
    seen = await heartbeat.last_seen()
    assert seen["scheduler"]["alive"] and seen["worker"]["alive"]

    await sign_in(client, await factory.user())
    page = (await client.get("/employee/admin/integrations")).text
    assert "<strong>worker</strong>: running" in page and "<strong>scheduler</strong>: running" in page


async def test_overview_says_when_no_worker_was_ever_seen(client, factory):
    await sign_in(client, await factory.user())
    page = (await client.get("/employee/admin/integrations")).text
    assert "never seen: is it running?" in page
