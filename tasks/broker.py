"""The worker's side of the Dramatiq broker: its middleware, added before any actor module is imported
(Dramatiq's multi-file layout). The broker itself is built in one place, app.core.queue.

Actors are async; the AsyncIO middleware runs them on one event loop per worker process, and the
database pool is opened on that loop when the worker boots, so actors share pooled connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, Middleware

from app.core import db, outbound, queue
from app.webhooks import stats
from app.webhooks.delivery import RetryRequest
from app.webhooks.schedule import schedule_retry

log = logging.getLogger("intime.delivery")


class DatabasePool(Middleware):
    """The worker's connection pool. Its transactions commit without waiting for the WAL flush
    (synchronous_commit off): a database crash may forget the last fraction of a second of worker
    writes, which at-least-once delivery absorbs (the delivery is sent again and the receiver
    de-duplicates on webhook-id); the database stays consistent, and events themselves are written
    by the publisher's transaction with its own, full durability."""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        assert thread is not None, "the AsyncIO middleware starts the loop before this runs"
        thread.run_coroutine(db.open_pool(asynchronous_commit=True))

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            thread.run_coroutine(db.close_pool())


class DeliveryBackoff(Middleware):
    """The retry schedule of webhook deliveries (DESIGN: backoff is a Dramatiq middleware).

    When deliver_webhook reports a retryable failure, this reads the delivery's policy (the webhook's
    override or the organisation's default), stores the next attempt time or sends the delivery to the
    DLQ, and re-enqueues the message with the computed delay. PostgreSQL holds the schedule, so a
    delayed message lost with Redis is found again by the scheduler's sweep.
    """

    # Dramatiq polls an idle queue with a backoff that grows to the worker timeout (1 s by default), and
    # a delayed message moves to its queue only when that consumer loop turns: two hops of up to 1 s,
    # which made retries fire 0.8 s late on average (measured). 100 ms bounds the lateness at the cost
    # of ten cheap Redis polls a second per idle queue.
    POLL_MS = 100

    def before_worker_boot(self, broker, worker):
        worker.worker_timeout = self.POLL_MS

    def after_process_message(self, broker, message, *, result=None, exception=None):
        requests = [result] if isinstance(result, RetryRequest) else result
        if exception is not None or not isinstance(requests, list):
            return
        requests = [request for request in requests if isinstance(request, RetryRequest)]
        if not requests:
            return
        thread = get_event_loop_thread()
        assert thread is not None
        scheduled = thread.run_coroutine(self._schedule(requests))
        # Retries due close together travel together (app.core.queue.send_deliveries).
        queue.send_deliveries(scheduled)

    @staticmethod
    async def _schedule(requests) -> list[tuple[str, int]]:
        """Each failure's next attempt, decided concurrently; (delivery id, delay ms) of those to retry.

        One decision that fails does not take the batch's others with it: those are scheduled and sent,
        and the failed one stays as recorded, for the sweep to decide on once its lease has run out."""
        delays = await asyncio.gather(
            *(schedule_retry(r.delivery_id, r.attempt_number, r.attempt_id, r.retry_after_ms) for r in requests),
            return_exceptions=True,
        )
        scheduled = []
        for request, delay in zip(requests, delays, strict=True):
            if isinstance(delay, BaseException):
                log.error("the retry decision for delivery %s failed: %r", request.delivery_id, delay)
            elif delay is not None:
                scheduled.append((request.delivery_id, delay))
        return scheduled


class StatsFlusher(Middleware):
    """Writes the worker's buffered delivery statistics once a second, and a last time on shutdown."""

    def __init__(self) -> None:
        self.stopping: asyncio.Event | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        assert thread is not None
        asyncio.run_coroutine_threadsafe(self._loop(), thread.loop)

    async def _loop(self) -> None:
        self.stopping = asyncio.Event()
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=1.0)
            try:
                await stats.flush()
            except Exception:  # a database hiccup: the counts stay buffered for the next round
                logging.getLogger("intime.stats").exception("flushing delivery statistics failed")

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        if thread is None:
            return
        if self.stopping is not None:
            thread.loop.call_soon_threadsafe(self.stopping.set)
        with contextlib.suppress(Exception):
            thread.run_coroutine(stats.flush())


class HttpClient(Middleware):
    """One pooled outbound HTTP client per worker process, closed when the worker stops."""

    def before_worker_shutdown(self, broker, worker):
        thread = get_event_loop_thread()
        if thread is not None:
            thread.run_coroutine(outbound.close_shared_client())


class _ReturnedRetryRequest(logging.Filter):
    """deliver_webhook returns its RetryRequest to DeliveryBackoff on purpose, not to a result backend;
    Dramatiq would warn about the "discarded" value on every retryable failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "'deliver_webhook' returned a value" not in message and "'deliver_batch' returned a value" not in message


logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ReturnedRetryRequest())
# httpx logs every request at INFO: a line per delivery is noise in a worker's log (each attempt is
# already a row in delivery_attempts) and, measured, a noticeable share of a busy worker's CPU.
logging.getLogger("httpx").setLevel(logging.WARNING)


def add_worker_middleware(broker: RedisBroker) -> RedisBroker:
    broker.add_middleware(AsyncIO())
    # StatsFlusher before DatabasePool: its last flush must run before the pool closes.
    broker.add_middleware(StatsFlusher())
    broker.add_middleware(DatabasePool())
    broker.add_middleware(HttpClient())
    broker.add_middleware(DeliveryBackoff())
    return broker


broker = add_worker_middleware(queue.broker())
