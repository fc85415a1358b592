"""The port through which services hand work to the workers, by actor name.

Services never import actor modules (that would tie app/ to tasks/ in a circle); they name the actor
and its queue here. The broker is built here, once per process, and set as Dramatiq's global broker:
the web process and the scheduler only send through it; a worker (tasks/broker.py) adds its middleware
to this same broker before any actor is declared.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections.abc import Iterable

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed

from app.core.redis import get_redis
from app.core.settings import get_settings

# actor name -> queue name, as declared on the actors in tasks/.
ACTORS = {
    "deliver_webhook": "deliveries",
    "deliver_batch": "deliveries",
    "run_bulk_job": "bulk",
    "heartbeat": "system",
    "refresh_oauth_token": "oauth",
    "run_health_check": "integrations",
    "call_provider": "integrations",
}


NAMESPACE = "intime"
# Dramatiq's own retries of a deliver_batch message (unexpected errors only; declared on the actor).
DELIVERY_RETRIES = 5


def redis_key(message_id: str, retries: int) -> str:
    """The field of a message in its queue's Redis hash (`<namespace>:<queue>.msgs`, `.DQ.msgs` while
    delayed), where Dramatiq keeps its body from enqueue until a worker acknowledges it."""
    return f"{message_id}.{retries}"


class MessageKeys(dramatiq.Middleware):
    """Keys each message in Redis by its own id and retry count (redis_key), where Dramatiq would draw a
    random one: then anyone who knows a message's id can ask Redis whether it still exists
    (deliveries_alive). As unique as Dramatiq needs: each retry is a new key, and a delayed copy and its
    due copy sit in different hashes."""

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        message.options["redis_message_id"] = redis_key(message.message_id, message.options.get("retries", 0))


def wake_key(queue_name: str) -> str:
    """The Redis list whose entries wake an idle consumer of this queue (`.DQ` names the delayed one)."""
    return f"{NAMESPACE}:{queue_name}.wake"


# Entries kept in a wake list: more than the consumers that could be asleep on it are never needed.
WAKE_TOKENS = 64


class WakeConsumers(dramatiq.Middleware):
    """Every enqueue leaves an entry in its queue's wake list, which an idle consumer blocks on (BLPOP):
    an idle worker notices new work at once instead of polling Redis for it. The list is trimmed, so
    entries left while every consumer was busy cost one spare fetch each, no more."""

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        key = wake_key(message.queue_name)
        with broker.client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
            pipe.lpush(key, 1)
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            pipe.execute()


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, waiting instead of polling. Where Dramatiq sleeps after an empty fetch
    (a backoff growing to the worker timeout: with a short timeout, a busy idle loop; with a long one,
    late messages), this one blocks on the queue's wake list until an enqueue or the idle timeout. With
    every prefetched message still in a worker thread it waits for an acknowledgement instead (a thread
    is free again), and never past the time of a delayed message it handed out (the consumer thread
    moves that to its queue when its `eta` has come)."""

    def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout=0)  # no sleep of Dramatiq's own
        self.idle_s = timeout / 1000
        self.room = threading.Event()
        self.etas: list[float] = []

    def ack(self, message):
        try:
            super().ack(message)
        finally:
            self.room.set()

    def nack(self, message):
        try:
            super().nack(message)
        finally:
            self.room.set()

    def _wait_s(self) -> float:
        now = time.time() * 1000
        while self.etas and self.etas[0] <= now:
            heapq.heappop(self.etas)
        wait = min(self.idle_s, (self.etas[0] - now) / 1000) if self.etas else self.idle_s
        return max(wait, 0.005)  # BLPOP's 0 would mean "for ever"

    def __next__(self):
        self.room.clear()
        full = self.outstanding_message_count >= self.prefetch
        message = super().__next__()
        if message is not None:
            eta = message.options.get("eta")
            if isinstance(eta, int | float):
                heapq.heappush(self.etas, eta)
            return message
        if full:
            self.room.wait(self._wait_s())
            return None
        try:
            self.broker.client.blpop([wake_key(self.queue_name)], timeout=self._wait_s())
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None
        return None


class WakingRedisBroker(RedisBroker):
    """The project's broker: Dramatiq's Redis broker whose consumers wake on work (_WakingConsumer)."""

    @property
    def consumer_class(self):
        return _WakingConsumer


async def deliveries_alive(message_ids: set[str]) -> set[str]:
    """Which of these deliver_batch messages Redis still holds, waiting, delayed for a Dramatiq retry, or
    taken by a worker and not yet acknowledged: each retry Dramatiq may have made is asked for."""
    queue_name = ACTORS["deliver_batch"]
    hashes = (f"{NAMESPACE}:{queue_name}.msgs", f"{NAMESPACE}:{queue_name}.DQ.msgs")
    fields = [
        (message_id, redis_key(message_id, n))
        for message_id in sorted(message_ids)
        for n in range(DELIVERY_RETRIES + 1)
    ]
    async with get_redis().pipeline(transaction=False) as pipe:
        for key in hashes:
            pipe.hmget(key, [field for _, field in fields])
        found = await pipe.execute()
    return {message_id for values in found for (message_id, _), value in zip(fields, values, strict=True) if value}


_built: WakingRedisBroker | None = None
_lock = threading.Lock()


def broker() -> WakingRedisBroker:
    """The process's broker on REDIS_URL, built on first use and set as Dramatiq's global broker."""
    global _built
    with _lock:
        if _built is None:
            _built = WakingRedisBroker(url=get_settings().redis.url, namespace=NAMESPACE)
            _built.add_middleware(MessageKeys())
            _built.add_middleware(WakeConsumers())
            dramatiq.set_broker(_built)
        return _built


def _message(actor_name: str, args: tuple, message_id: str | None = None) -> dramatiq.Message:
    message: dramatiq.Message = dramatiq.Message(
        queue_name=ACTORS[actor_name], actor_name=actor_name, args=args, kwargs={}, options={}
    )
    return message if message_id is None else message.copy(message_id=message_id)


def send(actor_name: str, *args: object, delay_ms: int | None = None) -> None:
    broker().enqueue(_message(actor_name, args), delay=delay_ms)


def send_many(actor_name: str, arg_list: Iterable[tuple]) -> int:
    target = broker()
    count = 0
    for args in arg_list:
        target.enqueue(_message(actor_name, args))
        count += 1
    return count


async def asend(actor_name: str, *args: object, delay_ms: int | None = None) -> None:
    await asyncio.to_thread(send, actor_name, *args, delay_ms=delay_ms)


async def asend_many(actor_name: str, arg_list: Iterable[tuple]) -> int:
    items = list(arg_list)
    if not items:
        return 0
    return await asyncio.to_thread(send_many, actor_name, items)


def send_batches(batches: Iterable[tuple[str, str, list[str]]]) -> int:
    """Hand deliveries to the workers as deliver_batch messages, each (message id, webhook id, delivery
    ids): the message id is the one app.webhooks.dispatch wrote on the deliveries' rows, so only this
    message claims them."""
    target = broker()
    count = 0
    for message_id, webhook_id, delivery_ids in batches:
        target.enqueue(_message("deliver_batch", (delivery_ids, message_id, webhook_id), message_id=message_id))
        count += 1
    return count


async def asend_batches(batches: Iterable[tuple[str, str, list[str]]]) -> int:
    items = list(batches)
    return await asyncio.to_thread(send_batches, items) if items else 0
