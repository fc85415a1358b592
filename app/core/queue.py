"""The port through which services hand work to the workers, by actor name.

Services never import actor modules (that would tie app/ to tasks/ in a circle); they name the actor
and its queue here. The broker is the one tasks/broker.py builds and sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import dramatiq

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


def _broker() -> dramatiq.Broker:
    import tasks.broker  # noqa: F401  (builds and sets the broker on first use)

    return dramatiq.get_broker()


def _message(actor_name: str, args: tuple) -> dramatiq.Message:
    return dramatiq.Message(queue_name=ACTORS[actor_name], actor_name=actor_name, args=args, kwargs={}, options={})


def send(actor_name: str, *args: object, delay_ms: int | None = None) -> None:
    _broker().enqueue(_message(actor_name, args), delay=delay_ms)


def send_many(actor_name: str, arg_list: Iterable[tuple]) -> int:
    broker = _broker()
    count = 0
    for args in arg_list:
        broker.enqueue(_message(actor_name, args))
        count += 1
    return count


async def asend(actor_name: str, *args: object, delay_ms: int | None = None) -> None:
    await asyncio.to_thread(send, actor_name, *args, delay_ms=delay_ms)


async def asend_many(actor_name: str, arg_list: Iterable[tuple]) -> int:
    items = list(arg_list)
    if not items:
        return 0
    return await asyncio.to_thread(send_many, actor_name, items)
