"""Per-provider rate limits, shared by every worker: a token bucket in Redis.

The bucket holds up to `limit_per_hour` tokens (a full hour's allowance may be spent at once) and
refills continuously at limit/3600 per second. `take` either takes a token or says how long until the
next one; the caller waits that long or defers the call (re-enqueues it with that delay). A call over
the limit is never dropped. One Lua script per take, so two workers never spend the same token.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from app.core.redis import get_redis

# KEYS[1] the bucket; ARGV: now, capacity, refill per second. Returns {taken (0/1), wait seconds, tokens}.
_SCRIPT = """
local now, capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens') or ARGV[2])
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or ARGV[1])
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local taken, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1; taken = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return {taken, tostring(wait), tostring(tokens)}
"""


@dataclass(frozen=True)
class Take:
    taken: bool
    wait_seconds: float  # until the next token, when not taken
    remaining: float


def _key(provider_id: uuid.UUID) -> str:
    return f"intime:ratelimit:{provider_id}"


async def take(provider_id: uuid.UUID, limit_per_hour: int, *, now: float | None = None) -> Take:
    at = time.time() if now is None else now
    taken, wait, tokens = await get_redis().eval(  # type: ignore[misc]
        _SCRIPT, 1, _key(provider_id), at, limit_per_hour, limit_per_hour / 3600
    )
    return Take(bool(int(taken)), float(wait), float(tokens))


async def used_this_hour(provider_id: uuid.UUID, limit_per_hour: int, *, now: float | None = None) -> int:
    """How much of the hourly allowance is spent right now (for the page): capacity minus tokens left."""
    at = time.time() if now is None else now
    tokens_raw, at_raw = await get_redis().hmget(_key(provider_id), "tokens", "at")  # type: ignore[misc]
    if tokens_raw is None or at_raw is None:
        return 0
    tokens = min(limit_per_hour, float(tokens_raw) + max(0.0, at - float(at_raw)) * limit_per_hour / 3600)
    return max(0, round(limit_per_hour - tokens))
