"""A circuit breaker per integration provider, kept in Redis so that every worker and web process agrees.

States: **closed** (calls go through), **open** (no calls; the integration fails over), **half-open**
(after a cooldown, probes go through: `probe_successes` successes in a row close it, one failure opens it
again with a longer cooldown). A closed breaker opens after `failure_threshold` consecutive failures,
or when the failure rate over the last `window_seconds` reaches `failure_rate` with at least
`min_calls` calls. The cooldown doubles with each trip that follows another without a clean close,
up to `cooldown_max_seconds` (app.core.backoff's one formula, without jitter: a breaker's cooldown is
shared by every process, so there is no crowd to spread). Real calls and health checks both report
their outcomes here.

Every transition happens inside one Lua script, so two workers reporting at once cannot both trip it
or both close it; the script reads the time from Redis (`TIME`), so workers on machines whose clocks
disagree still agree on when a cooldown ends. Tests pass their own clock (`now=`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from app.core.backoff import Backoff
from app.core.redis import get_redis, run_script

BUCKET_SECONDS = 5  # the failure-rate window is counted in buckets of this many seconds


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    failure_rate: float = 0.5
    min_calls: int = 10
    window_seconds: int = 60
    cooldown_seconds: int = 30
    cooldown_max_seconds: int = 600
    probe_successes: int = 3


@dataclass(frozen=True)
class BreakerState:
    state: str  # closed | open | half_open
    consecutive_failures: int
    trips: int
    opened_at: float | None
    retry_at: float | None  # when an open breaker lets a probe through

    @property
    def allows_calls(self) -> bool:
        return self.state != "open"


def cooldowns(policy: BreakerPolicy) -> list[float]:
    """The cooldown after the 1st, 2nd, ... trip in a row, up to the first that reaches the cap (every
    later trip waits that long too)."""
    backoff = Backoff(first=policy.cooldown_seconds, cap=policy.cooldown_max_seconds, jitter=(1.0, 1.0))
    waits = [backoff.base(1)]
    while waits[-1] < policy.cooldown_max_seconds and len(waits) < 64:
        waits.append(backoff.base(len(waits) + 1))
    return waits


# KEYS[1] the breaker hash, KEYS[2] the window hash.
# ARGV: now (-1: Redis's TIME), outcome (1 success, 0 failure, -1 none: just read and advance open -> half_open),
# failure_threshold, failure_rate, min_calls, window_seconds, probe_successes, bucket, then cooldowns(policy)
_SCRIPT = """
local now = tonumber(ARGV[1])
if now < 0 then  -- no clock given: Redis's own, the one clock every worker on every machine shares
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local outcome = tonumber(ARGV[2])
local threshold, rate, min_calls = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local window, probes, bucket = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local waits = {}
for i = 9, #ARGV do waits[#waits + 1] = tonumber(ARGV[i]) end

local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local consecutive = tonumber(redis.call('HGET', KEYS[1], 'consecutive') or '0')
local trips = tonumber(redis.call('HGET', KEYS[1], 'trips') or '0')
local opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
local successes = tonumber(redis.call('HGET', KEYS[1], 'probe_ok') or '0')

local function wait_for(n)
  return waits[math.min(math.max(n, 1), #waits)]
end

local function trip()
  state = 'open'; trips = trips + 1; opened_at = now; successes = 0
end

if state == 'open' and now >= opened_at + wait_for(trips) then
  state = 'half_open'; successes = 0
end

if outcome >= 0 and state ~= 'open' then
  local b = math.floor(now / bucket)
  redis.call('HINCRBY', KEYS[2], b .. ':c', 1)
  if outcome == 0 then redis.call('HINCRBY', KEYS[2], b .. ':f', 1) end
  redis.call('EXPIRE', KEYS[2], window + bucket * 2)
  if state == 'half_open' then
    if outcome == 1 then
      successes = successes + 1
      if successes >= probes then state = 'closed'; consecutive = 0; trips = 0; successes = 0 end
    else
      trip()
    end
  else
    if outcome == 1 then
      consecutive = 0
    else
      consecutive = consecutive + 1
      local calls, fails = 0, 0
      local oldest = math.floor((now - window) / bucket)
      local fields = redis.call('HGETALL', KEYS[2])
      for i = 1, #fields, 2 do
        local at, kind = string.match(fields[i], '(%d+):(%a)')
        at = tonumber(at)
        if at <= oldest then
          redis.call('HDEL', KEYS[2], fields[i])
        elseif kind == 'c' then calls = calls + tonumber(fields[i + 1])
        else fails = fails + tonumber(fields[i + 1]) end
      end
      if consecutive >= threshold or (calls >= min_calls and fails / calls >= rate) then
        trip(); consecutive = 0
        redis.call('DEL', KEYS[2])
      end
    end
  end
end

redis.call('HSET', KEYS[1], 'state', state, 'consecutive', consecutive, 'trips', trips,
           'opened_at', opened_at, 'probe_ok', successes)
local retry_at = 0
if state == 'open' then retry_at = opened_at + wait_for(trips) end
return {state, consecutive, trips, tostring(opened_at), tostring(retry_at)}
"""


def _keys(provider_id: uuid.UUID) -> list[str]:
    return [f"intime:breaker:{provider_id}", f"intime:breaker:{provider_id}:window"]


async def _run(provider_id: uuid.UUID, outcome: int, policy: BreakerPolicy, now: float | None) -> BreakerState:
    at = -1 if now is None else now  # the script reads Redis's TIME: callers' clocks may disagree
    result = await run_script(
        _SCRIPT,
        _keys(provider_id),
        [
            at,
            outcome,
            policy.failure_threshold,
            policy.failure_rate,
            policy.min_calls,
            policy.window_seconds,
            policy.probe_successes,
            BUCKET_SECONDS,
            *cooldowns(policy),
        ],
    )
    state, consecutive, trips, opened_at, retry_at = result
    state = state.decode() if isinstance(state, bytes) else state
    opened, retry = float(opened_at), float(retry_at)
    return BreakerState(state, int(consecutive), int(trips), opened or None, retry or None)


async def record(
    provider_id: uuid.UUID, success: bool, policy: BreakerPolicy, *, now: float | None = None
) -> BreakerState:
    """Report one call's or health check's outcome; returns the state after it."""
    return await _run(provider_id, 1 if success else 0, policy, now)


async def state(provider_id: uuid.UUID, policy: BreakerPolicy, *, now: float | None = None) -> BreakerState:
    """The current state (an open breaker whose cooldown has passed becomes half-open here)."""
    return await _run(provider_id, -1, policy, now)


async def reset(provider_id: uuid.UUID) -> None:
    await get_redis().delete(*_keys(provider_id))
