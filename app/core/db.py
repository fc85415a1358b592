"""The Piccolo engine (one per process) and a raw asyncpg connection for LISTEN."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from piccolo.engine.postgres import PostgresEngine

from app.core.settings import get_settings


def make_engine(url: str | None = None) -> PostgresEngine:
    return PostgresEngine(config={"dsn": url or get_settings().database.url}, log_queries=False)


def engine() -> PostgresEngine:
    """The engine Piccolo tables use (the one named in piccolo_conf)."""
    from piccolo.engine.finder import engine_finder

    found = engine_finder()
    assert isinstance(found, PostgresEngine)
    return found


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """A released connection keeps its session: asyncpg still rolls back an open transaction, but
    skips its default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), a
    round trip on every release, two per API request (about 10% of a publish's web CPU, issue 14).
    So pooled connections keep no session state: `SET LOCAL`, transaction advisory locks, and
    LISTEN only on a connection of its own (`connect()`)."""


async def open_pool(max_size: int | None = None, *, asynchronous_commit: bool = False) -> bool:
    """Open the process's pool; returns False when one is open already (then leave it to its owner)."""
    if getattr(engine(), "pool", None) is not None:
        return False
    size = max_size or get_settings().database.pool_max_size
    extra = {"server_settings": {"synchronous_commit": "off"}} if asynchronous_commit else {}
    await engine().start_connection_pool(min_size=min(2, size), max_size=size, reset=_keep_session, **extra)
    return True


async def close_pool() -> None:
    if getattr(engine(), "pool", None) is not None:
        await engine().close_connection_pool()


async def connect() -> asyncpg.Connection:
    """A dedicated connection outside the pool, for LISTEN or long work."""
    return await asyncpg.connect(get_settings().database.url)


@asynccontextmanager
async def connection() -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection, for the hot paths that want plain SQL and explicit transactions."""
    pool = getattr(engine(), "pool", None)
    if pool is not None:
        async with pool.acquire() as conn:
            yield conn
    else:
        conn = await connect()
        try:
            yield conn
        finally:
            await conn.close()
