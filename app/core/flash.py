"""One-time messages for the next page a browser session sees (after a redirect), kept in Redis.

The OAuth callback ends on a redirect to the panel; the message saying how the connection went
travels here rather than in the URL, where it could be forged or bookmarked.
"""

from __future__ import annotations

import hashlib
import json

from app.core.redis import get_redis

TTL_SECONDS = 300


def _key(session_id: str) -> str:
    return "intime:flash:" + hashlib.sha256(session_id.encode()).hexdigest()


async def push(session_id: str | None, message: str, *, ok: bool) -> None:
    if not session_id:
        return
    key = _key(session_id)
    async with get_redis().pipeline(transaction=True) as pipe:
        pipe.rpush(key, json.dumps({"message": message, "ok": ok}))
        pipe.expire(key, TTL_SECONDS)
        await pipe.execute()


async def pop(session_id: str | None) -> list[dict]:
    if not session_id:
        return []
    redis = get_redis()
    key = _key(session_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        items, _ = await pipe.execute()
    return [json.loads(item) for item in items]
