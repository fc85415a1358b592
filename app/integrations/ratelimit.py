"""Per-provider rate limits, shared by every worker: a token bucket in Redis.

The bucket holds up to `limit_per_hour` tokens (a full hour's allowance may be spent at once) and
refills continuously at limit/3600 per second. `take` either takes a token or says how long until the
next one; the caller waits that long or defers the call (re-enqueues it with that delay). A call over
the limit is not dropped. One Lua script per take, so two workers never spend the same token.

With `reserve`, a take over the limit books the next free slot instead (the bucket goes below zero,
up to one hour's allowance): each waiting call gets its own time, one token apart, instead of all of
them waking together to fight for one token. The caller must then make the call at that time without
taking again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from app.core.redis import get_redis, run_script

# KEYS[1] the bucket; ARGV: now, capacity, refill per second, reserve (0/1).
# Returns {taken (0/1: a token now, or a slot booked in `wait` seconds), wait seconds, tokens}.
_SCRIPT = """
local now, capacity, rate, reserve = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[2])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[1])
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local taken, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1; taken = 1
elseif reserve and tokens - 1 >= -capacity then
  tokens = tokens - 1; taken = 1; wait = -tokens / rate
else
  wait = (1 - tokens) / rate
end
-- Time only moves forward: a worker whose clock is behind must not make the next one count time twice.
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', math.max(now, at))
redis.call('EXPIRE', KEYS[1], math.ceil(2 * capacity / rate) + 60)
return {taken, tostring(wait), tostring(tokens)}
"""


@dataclass(frozen=True)
class Take:
    taken: bool  # with wait_seconds > 0: a slot booked for then
    wait_seconds: float  # until the token (or the booked slot) is due
    remaining: float


def _key(provider_id: uuid.UUID) -> str:
    return f"intime:ratelimit:{provider_id}"


async def take(provider_id: uuid.UUID, limit_per_hour: int, *, reserve: bool = False, now: float | None = None) -> Take:
    at = time.time() if now is None else now
    taken, wait, tokens = await run_script(
        _SCRIPT, [_key(provider_id)], [at, limit_per_hour, limit_per_hour / 3600, int(reserve)]
    )
    return Take(bool(int(taken)), float(wait), float(tokens))


async def used_this_hour(provider_id: uuid.UUID, limit_per_hour: int, *, now: float | None = None) -> int:
    """How much of the hourly allowance is spent right now (for the page): capacity minus tokens left,
    booked slots included (so it may exceed the limit while calls wait for their slots)."""
    at = time.time() if now is None else now
    tokens_raw, at_raw = await get_redis().hmget(_key(provider_id), "tokens", "at")  # type: ignore[misc]
    if tokens_raw is None or at_raw is None:
        return 0
    tokens = min(limit_per_hour, float(tokens_raw) + max(0.0, at - float(at_raw)) * limit_per_hour / 3600)
    return max(0, round(limit_per_hour - tokens))
