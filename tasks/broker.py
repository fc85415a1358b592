"""The Dramatiq broker: built and set before any actor module is imported (Dramatiq's multi-file layout).

Actors are async; the AsyncIO middleware runs them on one event loop per worker process, and the
database pool is opened on that loop when the worker boots, so actors share pooled connections.
"""

from __future__ import annotations

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


def build_broker(url: str | None = None) -> RedisBroker:
    broker = RedisBroker(url=url or get_settings().redis.url, namespace="intime")
    broker.add_middleware(AsyncIO())
    broker.add_middleware(DatabasePool())
    return broker


broker = build_broker()
dramatiq.set_broker(broker)
