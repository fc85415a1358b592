"""Per-webhook delivery limits, as a receiver sees them (issue 13, finding 2): a webhook's cap on
requests in flight, its organisation's default cap, its rate limit, and what one organisation's hanging
endpoints must not do to another's deliveries. Black box: the JSON API, the scheduler, the session's
`dramatiq tasks` worker (4 threads) and real receivers on 127.0.0.1, which measure what arrives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import cast

import pytest

from app.core import db
from tests.pipeline import FAST, bearer, wait_until
from tests.receiver import Answer, Receiver

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")


class _NotingWriter:
    """The receiver's side of a connection, noting the moment each answer goes out."""

    def __init__(self, writer: asyncio.StreamWriter, answered: list[float]) -> None:
        self._writer, self._answered = writer, answered

    def write(self, data: bytes) -> None:
        self._answered.append(time.time())
        self._writer.write(data)

    def __getattr__(self, name: str):
        return getattr(self._writer, name)


class CountingReceiver(Receiver):
    """A Receiver that also knows how many requests it was holding at once: each request is open from
    its arrival (`log[i].at`) until its answer is written."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[float] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await super()._serve(reader, cast(asyncio.StreamWriter, _NotingWriter(writer, self.answered)))

    def most_at_once(self) -> int:
        # An answer and an arrival at the same instant: the answer first (-1 sorts before +1).
        changes = sorted([(r.at, 1) for r in self.log] + [(at, -1) for at in self.answered])
        open_now = most = 0
        for _, change in changes:
            open_now += change
            most = max(most, open_now)
        return most


@pytest.fixture
async def counting():
    instance = await CountingReceiver().start()
    yield instance
    await instance.stop()


async def _deliveries(webhook_id: str) -> list[dict]:
    """Each delivery of the webhook: status, DLQ reason, attempt count, recorded attempts' outcomes."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT d.id, d.status, d.dlq_reason::text, d.attempt_count, "
            "coalesce(array_agg(a.outcome ORDER BY a.attempt_number) FILTER (WHERE a.id IS NOT NULL), '{}') "
            "AS outcomes FROM webhook_deliveries d "
            "LEFT JOIN delivery_attempts a ON a.delivery_id = d.id WHERE d.webhook_id = $1 GROUP BY d.id",
            uuid.UUID(webhook_id),
        )
    return [dict(row) for row in rows]


async def _all_settled(webhook_id: str, count: int, status: str = "success") -> list[dict]:
    async def settled() -> list[dict] | None:
        rows = await _deliveries(webhook_id)
        return rows if len(rows) == count and all(row["status"] == status for row in rows) else None

    settled.__name__ = f"all {count} deliveries are {status}"
    return await wait_until(settled, timeout=25)


def _one_attempt_each(rows: list[dict], outcome: str = "success") -> list[tuple[str, int, list[str]]]:
    """The deliveries that did not end after exactly one attempt, recorded with this outcome."""
    return [
        (row["status"], row["attempt_count"], row["outcomes"])
        for row in rows
        if row["attempt_count"] != 1 or row["outcomes"] != [outcome]
    ]


async def _arrived(receiver: Receiver, count: int, timeout: float) -> None:
    """Wait until `count` requests arrived or `timeout` passed, without failing: the test's assertion
    then shows what did arrive."""
    with contextlib.suppress(TimeoutError):
        await receiver.wait_for(count, timeout)


# --- a webhook's cap and its organisation's default ------------------------------------------------------


async def test_a_webhook_capped_at_2_never_has_more_than_2_requests_open_and_waiting_uses_no_retry(api, counting):
    # Given a webhook capped at 2 whose receiver holds every request for 0.8 s
    counting.default = Answer(delay=0.8)
    hook = await api.webhook(counting.url, max_in_flight=2, timeout_seconds=10)

    # When 8 matching events are published at once
    for n in range(8):
        await api.publish(payload={"n": n})

    # Then all 8 are delivered, never more than 2 at a time, yet 2 at a time (a cap, not a queue of one)
    rows = await _all_settled(hook["id"], 8)
    assert len(counting.log) == 8
    assert counting.most_at_once() == 2, f"{counting.most_at_once()} requests were open at once"
    # And waiting for a free slot was not a failed try: one attempt each, nothing retried
    assert _one_attempt_each(rows) == []


async def test_the_organisations_default_cap_of_1_holds_for_a_webhook_without_its_own(api, counting):
    # Given an organisation whose default cap is 1, and a webhook that leaves its cap to it
    saved = await api.put("/delivery-settings", {"max_in_flight": 1})
    assert saved.status_code == 200, saved.text
    counting.default = Answer(delay=0.5)
    hook = await api.webhook(counting.url, timeout_seconds=10)
    assert hook["max_in_flight"] is None

    # When 4 events are published at once
    for n in range(4):
        await api.publish(payload={"n": n})

    # Then the receiver gets them one at a time, each in one attempt
    rows = await _all_settled(hook["id"], 4)
    assert len(counting.log) == 4
    assert counting.most_at_once() == 1, f"{counting.most_at_once()} requests were open at once"
    assert _one_attempt_each(rows) == []


# --- a webhook's rate limit ------------------------------------------------------------------------------


async def test_a_rate_limit_of_2_per_second_spreads_8_deliveries_over_the_seconds(api, receiver):
    # Given a webhook limited to 2 deliveries a second, whose receiver answers at once
    hook = await api.webhook(receiver.url, rate_limit_per_second=2)

    # When 8 events are published at once
    for n in range(8):
        await api.publish(payload={"n": n})

    # Then all 8 arrive, and no second of arrivals holds more than a burst of 2 plus 2 a second
    rows = await _all_settled(hook["id"], 8)
    arrivals = sorted(request.at for request in receiver.log)
    assert len(arrivals) == 8
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1) for start in arrivals)
    spread = [round(t - arrivals[0], 2) for t in arrivals]
    assert busiest <= 4, f"{busiest} arrivals within one second; arrivals at {spread} s"
    # And being held back by the rate is not a failed try
    assert _one_attempt_each(rows) == []


# --- a noisy neighbour -----------------------------------------------------------------------------------


async def test_another_organisations_hanging_endpoints_do_not_delay_a_fast_webhook(api, client, factory):
    # Given organisation A: 3 webhooks with the shortest timeout (1 s) to an endpoint that hangs past it,
    # 15 deliveries waiting for each, no retries (so A settles within the test)
    hanging, fast = await Receiver().start(), await Receiver().start()
    hanging.default = Answer(delay=3)
    try:
        too_short = await api.post("/webhooks", {"name": "x", "url": hanging.url, "timeout_seconds": 0})
        assert too_short.status_code == 422  # 1 s is the least the API allows
        a_hooks = [
            await api.webhook(hanging.url, name=f"A{n}", timeout_seconds=1, retry_policy=FAST | {"max_retries": 0})
            for n in range(3)
        ]
        for n in range(15):
            await api.publish(payload={"n": n})
        # and organisation B, with one webhook to an endpoint that answers at once
        b_org = await factory.org()
        _, b_token = await factory.token(b_org, scopes="events:write,webhooks:write")
        created = await client.post(
            "/api/v1/webhooks",
            json={"name": "B", "url": fast.url, "event_patterns": ["job.*"], "retry_policy": FAST},
            headers=bearer(b_token),
        )
        assert created.status_code == 201, created.text
        b_hook = created.json()

        # When A's requests are hanging and B publishes 3 events
        await hanging.wait_for(3)
        published: dict[str, float] = {}
        for n in range(3):
            at = time.time()
            answer = await client.post(
                "/api/v1/events", json={"type": "job.created", "payload": {"b": n}}, headers=bearer(b_token)
            )
            assert answer.status_code == 201, answer.text
            published[answer.json()["id"]] = at

        # Then each of B's arrives within 2 s of being published, while A's backlog is still being sent
        await _arrived(fast, 3, timeout=15)
        a_rows_now = [row for hook in a_hooks for row in await _deliveries(hook["id"])]
        a_unsettled = sum(1 for row in a_rows_now if row["status"] not in ("success", "dlq"))
        waited = {
            json.loads(request.body)["id"]: round(request.at - published[json.loads(request.body)["id"]], 2)
            for request in fast.log
        }
        assert len(waited) == 3 and max(waited.values()) <= 2.0, f"B's deliveries arrived after {waited} s"
        assert a_unsettled > 0, "A's backlog was already sent: the test did not put B behind it"

        # And once everything settles, every attempt is what happened: A's timed out (after 10 in a row a
        # webhook is disabled and what still waited goes to the DLQ unsent), B's succeeded, and none of
        # either was written off as lost
        b_rows = await _all_settled(b_hook["id"], 3)
        assert _one_attempt_each(b_rows) == []
        for hook in a_hooks:
            a_rows = await _all_settled(hook["id"], 15, status="dlq")
            unsent = [row for row in a_rows if row["attempt_count"] == 0 and row["outcomes"] == []]
            assert all(row["dlq_reason"] == "webhook_disabled" for row in unsent), unsent
            assert _one_attempt_each([row for row in a_rows if row not in unsent], outcome="failed") == []
    finally:
        await hanging.stop()
        await fast.stop()
