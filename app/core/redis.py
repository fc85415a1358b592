"""One asyncio Redis client per process (connection-pooled), for sessions, limits and heartbeats."""

from __future__ import annotations

from functools import lru_cache

from redis.asyncio import Redis

from app.core.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> Redis:
    return Redis.from_url(get_settings().redis.url, decode_responses=True, health_check_interval=30)


async def close_redis() -> None:
    if get_redis.cache_info().currsize:
        await get_redis().aclose()
        get_redis.cache_clear()
