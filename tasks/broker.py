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
from app.webhooks import delivery, schedule, stats
from app.webhooks.schedule import RetryRequest

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

    When deliver_batch reports retryable failures, this reads each delivery's policy (the webhook's
    override or the organisation's default) and holds the delivery in PostgreSQL until its next attempt
    is due, or sends it to the DLQ (app.webhooks.schedule.decide_all). Nothing is re-enqueued here:
    dispatch sends the retry when PostgreSQL's clock says it is due, so no machine's clock decides it.
    """

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is not None or not isinstance(result, list):
            return
        requests = [request for request in result if isinstance(request, RetryRequest)]
        if not requests:
            return
        thread = get_event_loop_thread()
        assert thread is not None
        thread.run_coroutine(schedule.decide_all(requests))


class DetachedSends(Middleware):
    """Sends that outlived their message (app.webhooks.delivery.DETACH_AFTER_S) finish and record before
    the worker's statistics are flushed and its pool closed; one still hanging past this is recorded
    as lost by the sweep when its lease runs out, as if the worker had died."""

    SHUTDOWN_WAIT_S = 35.0

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = get_event_loop_thread()
        if thread is not None:
            with contextlib.suppress(Exception):
                thread.run_coroutine(delivery.wait_detached(self.SHUTDOWN_WAIT_S))


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
    """deliver_batch returns its RetryRequests to DeliveryBackoff on purpose, not to a result backend;
    Dramatiq would warn about the "discarded" value on every retryable failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'deliver_batch' returned a value" not in record.getMessage()


logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_ReturnedRetryRequest())
# httpx logs every request at INFO: a line per delivery is noise in a worker's log (each attempt is
# already a row in delivery_attempts) and, measured, a noticeable share of a busy worker's CPU.
logging.getLogger("httpx").setLevel(logging.WARNING)


def add_worker_middleware(broker: RedisBroker) -> RedisBroker:
    broker.add_middleware(AsyncIO())
    # Shutdown runs in this order: detached sends record, then the last statistics flush, then the
    # pool closes.
    broker.add_middleware(DetachedSends())
    broker.add_middleware(StatsFlusher())
    broker.add_middleware(DatabasePool())
    broker.add_middleware(HttpClient())
    broker.add_middleware(DeliveryBackoff())
    return broker


broker = add_worker_middleware(queue.broker())
