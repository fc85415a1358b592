"""Server-side sessions in Redis.

The cookie holds only a random id. Sign-in always issues a new id (no session fixation), sign-out
deletes the record, and every request renews the idle lifetime. Litestar's own server-side sessions
reuse the id that arrives in the cookie, which is why this small module exists.
"""

from __future__ import annotations

import json
import secrets
import time

from app.core.redis import get_redis
from app.core.settings import get_settings

COOKIE_NAME = "intime_session"


def _key(session_id: str) -> str:
    return f"session:{session_id}"


async def create(user_id: str) -> str:
    session_id = secrets.token_urlsafe(32)
    record = {"user_id": user_id, "created_at": int(time.time())}
    await get_redis().set(_key(session_id), json.dumps(record), ex=get_settings().security.session_ttl_seconds)
    return session_id


async def load(session_id: str | None) -> dict | None:
    if not session_id or len(session_id) > 100:
        return None
    redis = get_redis()
    raw = await redis.getex(_key(session_id), ex=get_settings().security.session_ttl_seconds)
    return json.loads(raw) if raw else None


async def destroy(session_id: str | None) -> None:
    if session_id:
        await get_redis().delete(_key(session_id))


def cookie_options() -> dict:
    security = get_settings().security
    return {
        "key": COOKIE_NAME,
        "httponly": True,
        "samesite": "lax",
        "secure": security.cookie_secure,
        "path": "/",
        "max_age": security.session_ttl_seconds,
    }
