"""The scheduler: LISTENs for new events and runs the periodic sweeps.

Safe to run in several copies: whatever it enqueues is idempotent work keyed by database rows, and
the sweeps added by later features claim their rows with FOR UPDATE SKIP LOCKED. If its LISTEN
connection drops it reconnects; anything it missed meanwhile is found by the next sweep, because
PostgreSQL, not the notification, is the record of what still has to happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import timedelta

import asyncpg

from app.core import heartbeat, queue
from app.core.settings import get_settings
from app.events import idempotency
from app.integrations import call_sweep, calls
from app.integrations import health as integration_health
from app.lifecycle import prune
from app.oauth import refresh as oauth_refresh
from app.webhooks import dispatch, dlq, fanout, schedule, stats

log = logging.getLogger("intime.scheduler")
SWEEP_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
FAN_OUT_BATCH = 500
# Work per sweep on disabled webhooks' waiting deliveries: batches until this much time is spent. The
# scheduler fans out new events on the same loop, so a longer drain would delay every organisation's
# deliveries. Measured with 100,000 waiting: 20,000 rows a sweep took another webhook's p99 from 120
# to 820 ms; 0.1 s a sweep keeps it at 67 -> 84 ms and drains all in 26 s.
DRAIN_SECONDS_PER_SWEEP = 0.1


class Scheduler:
    def __init__(self, sweep_grace: timedelta = schedule.SWEEP_GRACE, *, prunes: bool = True) -> None:
        self.sweep_grace = sweep_grace
        self.prunes = prunes  # tests that run the pruner's passes themselves turn it off
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.listener: asyncpg.Connection | None = None
        self.next_due: float | None = None  # seconds until dispatch has work again, by the database's clock

    def _on_event(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        # Coalesced: every notification only wakes the loop, whose fan-out reads the whole backlog from
        # PostgreSQL; the note itself is not parsed. A batch of 500 events is 500 notifications (the
        # contract of publish_event()); parsing each cost ~7 µs of the scheduler's CPU, this ~4.5 µs
        # (asyncpg's own dispatch), measured over 50,000 (issue 14).
        self.wake.set()  # fan-out waits on this

    def _on_held(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self.wake.set()  # a retry was scheduled or a delivery replayed: dispatch looks at when it is due

    async def _listen(self) -> None:
        """Hold a LISTEN connection open, reconnecting with a short pause whenever it drops."""
        while not self.stopping.is_set():
            try:
                self.listener = await asyncpg.connect(get_settings().database.url)
                await self.listener.add_listener("events", self._on_event)
                await self.listener.add_listener(dispatch.HELD_CHANNEL, self._on_held)
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
        await heartbeat.beat("scheduler")
        await queue.asend("heartbeat")

    async def check_health(self) -> int:
        """Integration providers whose health-check interval has passed go to the workers."""
        due = await integration_health.due_health_checks()
        return await queue.asend_many("run_health_check", [(str(provider_id),) for provider_id in due])

    async def refresh_oauth(self) -> int:
        """OAuth connections whose refresh time has come go to the workers."""
        due = await oauth_refresh.due_for_refresh()
        return await queue.asend_many("refresh_oauth_token", [(str(connection_id),) for connection_id in due])

    async def sweep_calls(self) -> int:
        """Background integration calls whose message or worker was lost go to the workers again."""
        found = await call_sweep.sweep(grace=self.sweep_grace)
        for row_id, delay_ms in found:
            await calls.send_call(row_id, delay_ms)
        return len(found)

    async def fan_out(self) -> int:
        """Drain the fan-out backlog: new events become held deliveries (dispatch sends them)."""
        total = 0
        while True:
            taken, created = await fanout.fan_out_backlog(FAN_OUT_BATCH)
            total += len(created)
            if taken < FAN_OUT_BATCH:
                return total

    async def dispatch(self) -> int:
        """Due held deliveries go to the queue, each webhook up to its cap and rate (app.webhooks.dispatch)."""
        handed = await dispatch.dispatch()
        self.next_due = handed.next_in
        return handed.handed

    async def sweep(self) -> int:
        swept = await schedule.sweep(grace=self.sweep_grace)
        drain_until = time.monotonic() + DRAIN_SECONDS_PER_SWEEP  # what waits for disabled webhooks
        while await dlq.drain_stopped() == dlq.DRAIN_BATCH and time.monotonic() < drain_until:
            pass
        if swept.lost_messages:
            log.info("%d deliveries' messages were lost; dispatching them again", len(swept.lost_messages))
        if swept.expired_leases:
            log.info("%d deliveries' workers stopped mid-send; their attempts are decided", len(swept.expired_leases))
        return len(swept.lost_messages) + len(swept.expired_leases)

    async def _prune(self) -> None:
        """Prune continuously, beside the loop (a pass never delays fan-out or dispatch): a pass removes
        everything past its retention in bounded batches, then waits `INTIME_PRUNE_INTERVAL_SECONDS`."""
        while not self.stopping.is_set():
            try:
                report = await prune.run_pass()
                if any(value for key, value in report.items() if key != "seconds"):
                    log.info("pruned %s", report)
            except Exception:
                log.exception("pruning pass failed; the next pass retries")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=get_settings().retention.interval_seconds)

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        pruner = asyncio.create_task(self._prune()) if self.prunes else None
        loop = asyncio.get_running_loop()
        next_sweep = next_beat = 0.0
        while not self.stopping.is_set():
            self.wake.clear()
            # New events' deliveries go out before the periodic steps (the drain takes up to 0.1 s), and
            # what the sweep held again goes out after them.
            failed = not await self._step(self.fan_out)
            failed |= not await self._step(self.dispatch)
            now = loop.time()
            if now >= next_sweep:
                # Each on its own: one failing (a database error, a bug) must not stop the others.
                steps = (
                    self.sweep,
                    stats.flush,  # lost attempts
                    self.refresh_oauth,
                    self.check_health,
                    self.sweep_calls,
                    idempotency.prune,  # idempotency keys past their TTL, a bounded batch
                )
                for step in steps:
                    failed |= not await self._step(step)
                failed |= not await self._step(self.dispatch)
                next_sweep = now + SWEEP_SECONDS
            if now >= next_beat:
                failed |= not await self._step(self.tick)
                next_beat = now + HEARTBEAT_SECONDS
            if failed:
                await asyncio.sleep(1)  # the next round retries; no tight loop against a failing database
            # Until the next sweep, or until a held delivery comes due (both measured from now, so this
            # host's wall clock plays no part), or until woken by an event or a scheduled retry.
            due = self.next_due if self.next_due is not None else SWEEP_SECONDS
            pause = max(0.0, min(next_sweep - loop.time(), due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=pause)
        await listener
        if pruner is not None:
            await pruner

    @staticmethod
    async def _step(step) -> bool:
        try:
            await step()
        except Exception:
            log.exception("scheduler step %s failed", getattr(step, "__name__", step))
            return False
        return True


async def amain() -> None:
    from app.core import db

    await db.open_pool(max_size=4)
    scheduler = Scheduler()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        scheduler.stopping.set()
        scheduler.wake.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    log.info("scheduler started")
    await scheduler.run()
    await db.close_pool()
    log.info("scheduler stopped")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(amain())


if __name__ == "__main__":
    main()
