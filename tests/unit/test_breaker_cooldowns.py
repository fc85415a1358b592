"""The circuit breaker's cooldowns and what its state allows, without Redis. The transitions
themselves run as one Lua script inside Redis (so two workers cannot both trip it): they are tested
with an explicit clock against the real server in tests/test_integration_breaker.py."""

from __future__ import annotations

from app.integrations.breaker import BreakerPolicy, BreakerState, cooldowns


def test_each_trip_in_a_row_doubles_the_cooldown_up_to_the_cap():
    assert cooldowns(BreakerPolicy(cooldown_seconds=10, cooldown_max_seconds=35)) == [10, 20, 35]
    assert cooldowns(BreakerPolicy(cooldown_seconds=30, cooldown_max_seconds=600)) == [30, 60, 120, 240, 480, 600]


def test_a_cap_below_the_first_cooldown_wins_and_a_long_schedule_stays_short():
    assert cooldowns(BreakerPolicy(cooldown_seconds=60, cooldown_max_seconds=30)) == [30]
    waits = cooldowns(BreakerPolicy(cooldown_seconds=1, cooldown_max_seconds=604_800))
    assert waits[:3] == [1, 2, 4] and waits[-1] == 604_800 and len(waits) == 21


def test_only_an_open_circuit_refuses_calls():
    def state(name: str) -> BreakerState:
        return BreakerState(name, consecutive_failures=0, trips=1, opened_at=None, retry_at=None)

    assert state("closed").allows_calls and state("half_open").allows_calls
    assert not state("open").allows_calls
