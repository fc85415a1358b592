"""One asyncio Redis client per process (connection-pooled), for sessions, limits and heartbeats."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

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
    """Several scripts, each (source, keys, args), in one round trip (a pipeline, not a transaction).

    Plain EVALSHA in the pipeline: redis-py's own script support would first ask SCRIPT EXISTS, a second
    round trip on every call. A script Redis does not know (it restarted) is loaded and that call alone
    is run again: the others already ran, and running a script twice is not harmless (it takes slots)."""
    if not calls:
        return []
    scripts = [_script(source) for source, _, _ in calls]
    async with get_redis().pipeline(transaction=False) as pipe:
        for script, (_, keys, args) in zip(scripts, calls, strict=True):
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
    for n, result in enumerate(results):
        if isinstance(result, NoScriptError):
            source, keys, args = calls[n]
            results[n] = await run_script(source, keys, args)
        elif isinstance(result, Exception):
            raise result
    return results
