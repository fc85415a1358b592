"""Baseline (b): the delivery code a team writes in an afternoon. A Dramatiq actor that POSTs with
httpx per message: no database, no attempt log, no signature, no retry policy of its own."""

from __future__ import annotations

import os

import dramatiq
import httpx
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace="bench-naive")
dramatiq.set_broker(broker)  # the `dramatiq` command works with the global broker
URL = os.environ.get("BENCH_RECEIVER", "")


@dramatiq.actor(broker=broker, max_retries=3)
def post(n: int) -> None:
    httpx.post(URL, json={"n": n}, timeout=10)


def enqueue(count: int) -> None:
    for n in range(count):
        post.send(n)
