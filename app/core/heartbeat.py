"""Liveness of the background processes, as seen by the portal: each writes a heartbeat to Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.core.redis import get_redis

PROCESSES = ("scheduler", "worker")
STALE_AFTER_SECONDS = 45


async def beat(process: str) -> None:
    await get_redis().set(f"heartbeat:{process}", str(time.time()), ex=24 * 3600)


async def last_seen() -> dict[str, dict]:
    values = await get_redis().mget([f"heartbeat:{name}" for name in PROCESSES])
    now = time.time()
    result = {}
    for name, value in zip(PROCESSES, values, strict=True):
        seen = float(value) if value else None
        result[name] = {
            "at": datetime.fromtimestamp(seen, UTC) if seen else None,
            "alive": seen is not None and now - seen < STALE_AFTER_SECONDS,
        }
    return result
