"""A worker whose clock is off still retries on time.

Machines drift: NTP stops, a VM resumes from a snapshot. Beside the session's worker runs a second real
`dramatiq tasks` worker whose wall clock is 5 s ahead (or behind), from libfaketime (devtools.skew);
both take messages from the same queues (the first attempts the skewed one alone). Every delivery
fails twice and then succeeds, on a fixed 2 s policy without jitter, so each retry has one right
time: the previous attempt's arrival plus 2 s.

Times are measured where the request lands, on this test's clock, never from what a worker wrote
(delivery_attempts.started_at is the sending worker's clock: here it only tells which worker sent what).
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from app.core import db
from tests.pipeline import drained, paused, settled
from tests.receiver import Answer, Receiver

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")

DELAY_S = 2.0
POLICY = {"strategy": "fixed", "base_delay_ms": 2000, "max_delay_ms": 2000, "max_retries": 3, "jitter": False}
TOLERANCE_S = 1.0
# Several deliveries at once, so that both workers send some of the retries.
DELIVERIES = 6


async def _attempts(delivery_id) -> list[dict]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT attempt_number, outcome, response_status, started_at FROM delivery_attempts "
            "WHERE delivery_id = $1 ORDER BY attempt_number, started_at",
            delivery_id,
        )
    return [dict(row) for row in rows]


@pytest.mark.parametrize("skew_s", [5.0, -5.0], ids=["ahead 5 s", "behind 5 s"])
async def test_retries_arrive_on_time_with_a_worker_whose_clock_is_off(api, skewed_worker, worker_process, skew_s):
    # Given: a receiver per webhook that answers 500, 500, then 200, and two workers, one of them skewed
    receivers = [await Receiver().start() for _ in range(DELIVERIES)]
    try:
        for receiver in receivers:
            receiver.then(Answer(status=500), Answer(status=500))
        hooks = [await api.webhook(receiver.url, retry_policy=POLICY) for receiver in receivers]
        skewed_worker(skew_s)

        # When: one event reaches every webhook; the skewed worker alone sends the first attempts (the
        # session's worker is paused: it would take them all, being quicker), then both send the retries
        with paused(worker_process):
            event_id = await api.publish()
            await asyncio.gather(*(receiver.wait_for(1, timeout=30) for receiver in receivers))
        await asyncio.gather(*(receiver.wait_for(3, timeout=60) for receiver in receivers))
        deliveries = [await settled(event_id, hook["id"], "success") for hook in hooks]
        await drained(delayed=True)

        # Then: each retry arrived within a second of its time, and each history is whole
        problems, by_skewed = [], 0
        for receiver, delivery in zip(receivers, deliveries, strict=True):
            arrivals = [request.at for request in receiver.log]
            attempts = await _attempts(delivery["id"])
            senders = []
            for attempt, arrived in zip(attempts, arrivals, strict=False):
                offset = attempt["started_at"].timestamp() - arrived
                skewed = abs(offset - skew_s) < abs(offset)
                by_skewed += skewed
                senders.append(f"{'skewed' if skewed else 'normal'} ({offset:+.1f} s)")
            late = [round(later - (earlier + DELAY_S), 2) for earlier, later in itertools.pairwise(arrivals)]
            history = [(a["attempt_number"], a["outcome"], a["response_status"]) for a in attempts]
            where = f"delivery {delivery['id']}: lateness {late} s, senders {senders}, attempts {history}"
            if len(arrivals) != 3:
                problems.append(f"{len(arrivals)} arrivals, not 3; {where}")
            if any(abs(lateness) > TOLERANCE_S for lateness in late):
                problems.append(f"a retry off its time by more than {TOLERANCE_S:g} s; {where}")
            if [a["attempt_number"] for a in attempts] != [1, 2, 3] or any(a["outcome"] == "lost" for a in attempts):
                problems.append(f"attempt history not 1, 2, 3 without a lost attempt; {where}")
        assert not problems, "\n".join(problems)
        # The skewed worker took part: otherwise this test proved nothing about skew
        assert by_skewed > 0, "the skewed worker sent no attempt"
    finally:
        for receiver in receivers:
            await receiver.stop()
