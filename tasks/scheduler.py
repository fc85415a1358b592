"""The scheduler: LISTENs for new events and runs the periodic sweeps.

Safe to run in several copies: whatever it enqueues is idempotent work keyed by database rows, and
the sweeps added by later features claim their rows with FOR UPDATE SKIP LOCKED. If its LISTEN
connection drops it reconnects; anything it missed meanwhile is found by the next sweep, because
PostgreSQL, not the notification, is the record of what still has to happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal

import asyncpg

from app.core import heartbeat
from app.core.settings import get_settings

log = logging.getLogger("intime.scheduler")
TICK_SECONDS = 5.0


class Scheduler:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.listener: asyncpg.Connection | None = None

    def _on_event(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        log.debug("event %s %s", note.get("type"), note.get("id"))
        self.wake.set()  # fan-out waits on this

    async def _listen(self) -> None:
        """Hold a LISTEN connection open, reconnecting with a short pause whenever it drops."""
        while not self.stopping.is_set():
            try:
                self.listener = await asyncpg.connect(get_settings().database.url)
                await self.listener.add_listener("events", self._on_event)
                log.info("listening for events")
                while not self.stopping.is_set() and not self.listener.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), timeout=1.0)
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("LISTEN connection lost (%s); reconnecting in 2 s", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=2.0)
            finally:
                if self.listener is not None and not self.listener.is_closed():
                    await self.listener.close()

    async def tick(self) -> None:
        """Periodic work: tell the portal we live, and have a worker prove that it does too."""
        from tasks.system import heartbeat as worker_heartbeat

        await heartbeat.beat("scheduler")
        await asyncio.to_thread(worker_heartbeat.send)

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        while not self.stopping.is_set():
            try:
                await self.tick()
            except Exception:  # one failed tick must not stop the scheduler; the next one retries
                log.exception("scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=TICK_SECONDS)
        await listener


async def amain() -> None:
    import tasks  # noqa: F401  (sets the broker and registers the actors the scheduler sends)

    scheduler = Scheduler()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, scheduler.stopping.set)
    log.info("scheduler started")
    await scheduler.run()
    log.info("scheduler stopped")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain())


if __name__ == "__main__":
    main()
