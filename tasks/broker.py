"""The Dramatiq broker: built and set before any actor module is imported (Dramatiq's multi-file layout).

Actors are async; the AsyncIO middleware runs them on one event loop per worker process, and the
database pool is opened on that loop when the worker boots, so actors share pooled connections.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, Middleware

from app.core.settings import get_settings


class DatabasePool(Middleware):
    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from app.core import db

        thread = get_event_loop_thread()
        assert thread is not None, "the AsyncIO middleware starts the loop before this runs"
        thread.run_coroutine(db.open_pool())

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        from app.core import db

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

    def after_process_message(self, broker, message, *, result=None, exception=None):
        from app.webhooks.delivery import RetryRequest
        from app.webhooks.schedule import schedule_retry

        if exception is not None or not isinstance(result, RetryRequest):
            return
        thread = get_event_loop_thread()
        assert thread is not None
        delay = thread.run_coroutine(
            schedule_retry(result.delivery_id, result.attempt_number, result.attempt_id, result.retry_after_ms)
        )
        if delay is not None:
            broker.enqueue(
                dramatiq.Message(
                    queue_name=message.queue_name,
                    actor_name=message.actor_name,
                    args=(result.delivery_id,),
                    kwargs={},
                    options={},
                ),
                delay=delay,
            )


class HttpClient(Middleware):
    """One pooled outbound HTTP client per worker process, closed when the worker stops."""

    def before_worker_shutdown(self, broker, worker):
        from app.core import outbound

        thread = get_event_loop_thread()
        if thread is not None:
            thread.run_coroutine(outbound.close_shared_client())


class _ReturnedRetryRequest(logging.Filter):
    """deliver_webhook returns its RetryRequest to DeliveryBackoff on purpose, not to a result backend;
    Dramatiq would warn about the "discarded" value on every retryable failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'deliver_webhook' returned a value" not in record.getMessage()


logging.getLogger("dramatiq.worker.Worker").addFilter(_ReturnedRetryRequest())


def build_broker(url: str | None = None) -> RedisBroker:
    broker = RedisBroker(url=url or get_settings().redis.url, namespace="intime")
    broker.add_middleware(AsyncIO())
    broker.add_middleware(DatabasePool())
    broker.add_middleware(HttpClient())
    broker.add_middleware(DeliveryBackoff())
    return broker


broker = build_broker()
dramatiq.set_broker(broker)
