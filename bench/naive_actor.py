"""Baseline (b): the sender a competent team writes without a delivery engine. A Dramatiq actor that
signs each body with the webhook's secret (the same signing code as the project) and POSTs it through
one shared, pooled httpx client per worker process, as many connections as the worker has threads.
It records nothing: no delivery row, no attempt log, no retry policy of its own, no per-endpoint cap;
a failure is only Dramatiq's retry of the message. The bench runs it with the project's processes and
threads, so the two differ in what they do, not in how much concurrency they have."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import dramatiq
import httpx
from dramatiq.brokers.redis import RedisBroker

from app.webhooks.signing import generate_secret, signature_headers

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace="bench-naive")
dramatiq.set_broker(broker)  # the `dramatiq` command works with the global broker
URL = os.environ.get("BENCH_RECEIVER", "")
SECRET = os.environ.get("BENCH_SECRET") or generate_secret()
THREADS = int(os.environ.get("BENCH_WORKER_THREADS", "32"))
CLIENT = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS))


@dramatiq.actor(broker=broker, max_retries=3)
def post(delivery_id: str, event_type: str, data: dict) -> None:
    body = json.dumps({"id": delivery_id, "type": event_type, "data": data}).encode()
    headers = signature_headers(delivery_id, event_type, body, [SECRET], datetime.now(UTC))
    headers["content-type"] = "application/json"
    CLIENT.post(URL, content=body, headers=headers).raise_for_status()


def enqueue(count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        post.send(f"00000000-0000-0000-0000-{n:012d}", "job.created", {"n": n})


def waiting() -> int:
    return broker.client.hlen("bench-naive:default.msgs")
