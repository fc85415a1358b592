"""The circuit breaker and the rate limit of integration providers, on the real Redis: transitions with
an explicit clock, growing cooldowns, atomicity under concurrent reporters and across processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from app.integrations import breaker, ratelimit
from app.integrations.breaker import BreakerPolicy

POLICY = BreakerPolicy(
    failure_threshold=3, failure_rate=0.5, min_calls=6, window_seconds=60, cooldown_seconds=10,
    cooldown_max_seconds=35, probe_successes=2,
)  # fmt: skip
T0 = 1_800_000_000.0
ROOT = Path(__file__).resolve().parents[1]


async def test_consecutive_failures_open_it_and_a_success_in_between_does_not():
    provider = uuid.uuid4()
    for outcome in (False, False, True, False, False):
        state = await breaker.record(provider, outcome, POLICY, now=T0)
    assert state.state == "closed" and state.consecutive_failures == 2
    state = await breaker.record(provider, False, POLICY, now=T0 + 1)
    assert state.state == "open" and state.trips == 1 and not state.allows_calls
    assert state.retry_at == T0 + 1 + 10


async def test_a_failure_rate_over_the_window_opens_it_without_a_run_of_failures():
    provider = uuid.uuid4()
    outcomes = [True, False, True, False, True, False]  # never two failures in a row; 50 % after six calls
    for n, outcome in enumerate(outcomes):
        state = await breaker.record(provider, outcome, POLICY, now=T0 + n)
    assert state.state == "open"
    # Outside the window the old calls no longer count.
    other = uuid.uuid4()
    for n, outcome in enumerate([False, True, True, True, True]):
        await breaker.record(other, outcome, POLICY, now=T0 + n)
    late = await breaker.record(other, False, POLICY, now=T0 + 200)
    assert late.state == "closed"


async def test_half_open_after_the_cooldown_then_closed_by_probes_or_reopened_for_longer():
    provider = uuid.uuid4()
    for n in range(3):
        await breaker.record(provider, False, POLICY, now=T0 + n)
    assert (await breaker.state(provider, POLICY, now=T0 + 11)).state == "open"  # opened at T0+2, 10 s
    assert (await breaker.state(provider, POLICY, now=T0 + 12)).state == "half_open"
    # A failed probe opens it again, for twice as long; then four times, capped at 35 s.
    reopened = await breaker.record(provider, False, POLICY, now=T0 + 12)
    assert reopened.state == "open" and reopened.trips == 2 and reopened.retry_at == T0 + 12 + 20
    assert (await breaker.state(provider, POLICY, now=T0 + 31)).state == "open"
    await breaker.state(provider, POLICY, now=T0 + 32)
    third = await breaker.record(provider, False, POLICY, now=T0 + 32)
    assert third.trips == 3 and third.retry_at == T0 + 32 + 35
    # Enough successful probes close it, and the next trip starts from the short cooldown again.
    await breaker.state(provider, POLICY, now=T0 + 67)
    assert (await breaker.record(provider, True, POLICY, now=T0 + 67)).state == "half_open"
    closed = await breaker.record(provider, True, POLICY, now=T0 + 68)
    assert closed.state == "closed" and closed.trips == 0
    for n in range(3):
        again = await breaker.record(provider, False, POLICY, now=T0 + 70 + n)
    assert again.retry_at == T0 + 72 + 10


async def test_concurrent_reporters_trip_it_once():
    provider = uuid.uuid4()
    states = await asyncio.gather(*(breaker.record(provider, False, POLICY, now=T0) for _ in range(20)))
    assert max(s.trips for s in states) == 1
    assert (await breaker.state(provider, POLICY, now=T0)).trips == 1


async def test_the_token_bucket_spends_an_hours_allowance_then_says_how_long_to_wait():
    provider = uuid.uuid4()
    takes = [await ratelimit.take(provider, 6, now=T0) for _ in range(7)]
    assert [t.taken for t in takes] == [True] * 6 + [False]
    assert abs(takes[-1].wait_seconds - 600) < 1  # 6 an hour: one every 10 minutes
    assert await ratelimit.used_this_hour(provider, 6, now=T0) == 6
    assert not (await ratelimit.take(provider, 6, now=T0 + 599)).taken
    assert (await ratelimit.take(provider, 6, now=T0 + 601)).taken


async def test_the_limit_holds_across_two_worker_processes():
    """Two processes take from one provider's bucket as fast as they can: together they get the hour's
    allowance and not one token more."""
    provider = uuid.uuid4()
    script = (
        "import asyncio, sys, uuid\n"
        "from app.integrations import ratelimit\n"
        "async def main():\n"
        "    got = 0\n"
        "    for _ in range(80):\n"
        "        got += (await ratelimit.take(uuid.UUID(sys.argv[1]), 100, now=1800000000.0)).taken\n"
        "    print(got)\n"
        "asyncio.run(main())\n"
    )
    processes = [
        subprocess.Popen(  # noqa: ASYNC220  (two real processes are the point)
            [sys.executable, "-c", script, str(provider)], cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    counts = [int(p.communicate(timeout=60)[0]) for p in processes]
    assert sum(counts) == 100 and all(c > 0 for c in counts)


async def test_without_a_clock_given_it_keeps_redis_time_so_workers_with_skewed_clocks_agree(monkeypatch):
    import time

    from app.core.redis import get_redis

    seconds, micros = await get_redis().time()
    redis_now = seconds + micros / 1_000_000
    provider = uuid.uuid4()
    # Given a worker whose clock runs an hour ahead
    skewed = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: skewed)
    for _ in range(POLICY.failure_threshold):
        state = await breaker.record(provider, False, POLICY)
    monkeypatch.undo()
    # Then the circuit opened at Redis's time, and its probe is due a cooldown after that, not after
    # the worker's clock
    assert state.state == "open" and state.opened_at is not None and state.retry_at is not None
    assert abs(state.opened_at - redis_now) < 60
    assert state.retry_at - state.opened_at == POLICY.cooldown_seconds
