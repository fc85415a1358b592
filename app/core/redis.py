"""One asyncio Redis client per process (connection-pooled), for sessions, limits and heartbeats."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from redis.asyncio import Redis

from app.core.settings import get_settings


@lru_cache(maxsize=1)
def get_redis() -> Redis:
    return Redis.from_url(get_settings().redis.url, decode_responses=True, health_check_interval=30)


async def close_redis() -> None:
    if get_redis.cache_info().currsize:
        await get_redis().aclose()
        get_redis.cache_clear()


@lru_cache(maxsize=16)
def _script(source: str):
    return get_redis().register_script(source)


async def run_script(source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run a Lua script by its SHA (EVALSHA; Redis is sent the source only the first time, or again
    after a restart emptied its script cache), on the process's current client."""
    return await _script(source)(keys=list(keys), args=list(args), client=get_redis())


async def run_scripts(calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Several scripts, each (source, keys, args), in one round trip (a pipeline, not a transaction)."""
    if not calls:
        return []
    async with get_redis().pipeline(transaction=False) as pipe:
        for source, keys, args in calls:
            await _script(source)(keys=list(keys), args=list(args), client=pipe)
        return await pipe.execute()
