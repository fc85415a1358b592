"""Fixed-window counters in Redis, shared by every web process (sign-in failures, API tokens)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.core.redis import get_redis, run_script


@dataclass(frozen=True)
class Window:
    count: int
    limit: int
    reset_in: int
    """Seconds until the window ends and the count starts again."""

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)


# The count and its expiry in one command (a script runs atomically, as MULTI/EXEC did): a pipeline
# of INCRBY and EXPIRE in MULTI/EXEC was a quarter of an API request's web CPU (issue 14).
_HIT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return count
"""


async def hit(key: str, limit: int, window_seconds: int, amount: int = 1) -> Window:
    """Count `amount` against `key` in the current window and return the state after it."""
    now = int(time.time())
    start = now - now % window_seconds
    count = await run_script(_HIT, [f"rl:{key}:{start}"], [amount, window_seconds + 5])
    return Window(count=int(count), limit=limit, reset_in=start + window_seconds - now)


async def peek(key: str, limit: int, window_seconds: int) -> Window:
    now = int(time.time())
    start = now - now % window_seconds
    count = await get_redis().get(f"rl:{key}:{start}")
    return Window(count=int(count or 0), limit=limit, reset_in=start + window_seconds - now)


async def clear(key: str, window_seconds: int) -> None:
    now = int(time.time())
    await get_redis().delete(f"rl:{key}:{now - now % window_seconds}")


async def record_event(key: str, window_seconds: int) -> None:
    """Log one occurrence in a sliding window (a sorted set of timestamps)."""
    now = time.time()
    redis_key = f"sw:{key}"
    async with get_redis().pipeline(transaction=True) as pipe:
        pipe.zadd(redis_key, {f"{now:.6f}": now})
        pipe.zremrangebyscore(redis_key, 0, now - window_seconds)
        pipe.expire(redis_key, window_seconds + 5)
        await pipe.execute()


async def recent_events(key: str, limit: int, window_seconds: int) -> Window:
    """How many occurrences fell in the last `window_seconds`; `reset_in` is when one drops out."""
    now = time.time()
    redis_key = f"sw:{key}"
    async with get_redis().pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(redis_key, 0, now - window_seconds)
        pipe.zrange(redis_key, 0, 0, withscores=True)
        pipe.zcard(redis_key)
        _, oldest, count = await pipe.execute()
    reset_in = int(oldest[0][1] + window_seconds - now) + 1 if oldest else 0
    return Window(count=int(count), limit=limit, reset_in=reset_in)


async def forget(key: str) -> None:
    await get_redis().delete(f"sw:{key}")
