"""Refreshing tokens before they expire, and handing out a valid access token.

The scheduler enqueues connections whose `next_refresh_at` has come (expiry minus the margin);
`refresh` takes a Redis lock per connection and re-reads the row under it, so two workers never
refresh the same token. `get_access_token` refreshes on demand when the token is about to lapse.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
from authlib.integrations.httpx_client import OAuthError

from app.core import db, guard
from app.core.backoff import Backoff
from app.core.crypto import DecryptionError
from app.core.redis import get_redis, run_script
from app.core.settings import get_settings
from app.events import services as events
from app.oauth import audit, providers, vault
from app.oauth.clients import PROVIDER_CALL_SECONDS, authlib_client, checked_token, describe_error, load_client
from app.oauth.errors import ConnectFailed, NotFound, TokenUnavailable

log = logging.getLogger("intime.oauth")

LOCK_TTL_MS = 30_000
ACCESS_SKEW = timedelta(seconds=30)  # a token closer than this to its expiry is refreshed before use
# A provider that fails a refresh is asked again after 5 s, 10 s, 20 s ... up to 5 minutes, each wait
# shortened by up to a fifth so connections that failed together do not all come back together.
BACKOFF = Backoff(first=5.0, cap=300.0, factor=2.0, jitter=(0.8, 1.0))
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def _now() -> datetime:
    return datetime.now(UTC)


def _lock_key(connection_id: uuid.UUID) -> str:
    return f"intime:oauth:refresh-lock:{connection_id}"


@asynccontextmanager
async def locked(connection_id: uuid.UUID, *, wait: float) -> AsyncIterator[bool]:
    """The connection's token lock (refresh, disconnect, reconnect); yields whether it was taken."""
    redis = get_redis()
    key, holder = _lock_key(connection_id), secrets.token_hex(8)
    deadline = asyncio.get_running_loop().time() + wait
    taken = bool(await redis.set(key, holder, nx=True, px=LOCK_TTL_MS))
    while not taken and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        taken = bool(await redis.set(key, holder, nx=True, px=LOCK_TTL_MS))
    try:
        yield taken
    finally:
        if taken:
            await run_script(_RELEASE, [key], [holder])


def schedule(token: dict, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(expires_at, next_refresh_at): refresh a margin before expiry, or halfway for short-lived tokens."""
    try:
        lifetime = int(token.get("expires_in") or 0)
    except (TypeError, ValueError):
        lifetime = 0
    if lifetime <= 0:
        return None, None
    expires_at = now + timedelta(seconds=lifetime)
    margin = min(get_settings().oauth.refresh_margin_seconds, lifetime / 2)
    return expires_at, expires_at - timedelta(seconds=margin)


async def _row_for_refresh(conn, connection_id: uuid.UUID):
    return await conn.fetchrow(
        "SELECT id, org_id, provider, account_label, refresh_token, expires_at, next_refresh_at, status, "
        "refresh_failures, token_generation FROM oauth_connections WHERE id = $1",
        connection_id,
    )


def _fresh(expires_at: datetime | None, next_refresh_at: datetime | None, now: datetime) -> bool:
    """Good enough to hand out: not within the skew of its expiry. The skew is ACCESS_SKEW, or half the
    refresh margin for short-lived tokens, so a 2-second token is not "about to expire" from birth."""
    if expires_at is None:
        return True
    skew = ACCESS_SKEW
    if next_refresh_at is not None and next_refresh_at < expires_at:
        skew = min(skew, (expires_at - next_refresh_at) / 2)
    return expires_at > now + skew


async def refresh(connection_id: uuid.UUID, *, on_demand: bool = False, force: bool = False) -> str:
    """Refresh one connection's tokens if they are due (scheduled), about to lapse (`on_demand`), or
    because an admin asked (`force`).

    Returns what happened: refreshed, not_due, busy (another process holds the lock), unavailable,
    needs_reauth or failed. The lock is per connection, with a re-read of the row after taking it: a
    second refresher arriving just after the first finds fresh tokens and does nothing. Every write is
    fenced by the token generation read, so a refresh that outlived its lock, or met a disconnect or a
    reconnect, changes nothing."""
    async with locked(connection_id, wait=0) as taken:
        if not taken:
            return "busy"
        try:
            return await _refresh_locked(connection_id, on_demand, force)
        except Exception as error:  # an answer or a state nobody foresaw: recorded, retried with backoff
            log.exception("refreshing OAuth connection %s failed", connection_id)
            async with db.connection() as conn:
                row = await _row_for_refresh(conn, connection_id)
            if row is None:
                return "unavailable"
            return await _refresh_failed(row, f"unexpected error: {describe_error(error)}", permanent=False)


async def _refresh_locked(connection_id: uuid.UUID, on_demand: bool, force: bool) -> str:
    async with db.connection() as conn:
        row = await _row_for_refresh(conn, connection_id)
        if row is None or row["refresh_token"] is None or row["status"] in ("needs_reauth", "revoked"):
            return "unavailable"
        now = _now()
        if force:
            due = True
        elif on_demand:
            # Fresh enough, or a failure's backoff still running: the provider is not asked again yet.
            backing_off = row["refresh_failures"] > 0 and row["next_refresh_at"] and row["next_refresh_at"] > now
            due = not _fresh(row["expires_at"], row["next_refresh_at"], now) and not backing_off
        else:
            due = row["next_refresh_at"] is not None and row["next_refresh_at"] <= now
        if not due:
            await conn.execute("UPDATE oauth_connections SET refresh_enqueued_at = NULL WHERE id = $1", connection_id)
            return "not_due" if not on_demand or row["refresh_failures"] == 0 else "failed"
        provider = providers.get(row["provider"])
        try:
            client = await load_client(conn, row["org_id"], provider) if provider else None
        except ConnectFailed as failed:
            return await _refresh_failed(row, str(failed), permanent=True)
        # A worker that dies here leaves `refreshing`; the sweep takes it up again a minute later.
        await conn.execute(
            "UPDATE oauth_connections SET status = 'refreshing', next_refresh_at = now() + interval '60 seconds', "
            "updated_at = now() WHERE id = $1 AND token_generation = $2",
            connection_id,
            row["token_generation"],
        )
    if client is None:
        return await _refresh_failed(row, "the provider's client settings are missing", permanent=False)
    try:
        old_refresh = vault.open_token(connection_id, "refresh", row["refresh_token"])
    except DecryptionError as error:
        return await _refresh_failed(row, f"the stored refresh token cannot be read ({error})", permanent=True)
    try:
        async with asyncio.timeout(PROVIDER_CALL_SECONDS), authlib_client(client) as oauth:
            token = checked_token(await oauth.refresh_token(client.endpoints.token_url, refresh_token=old_refresh))
    except OAuthError as error:
        detail = f"{error.error}{': ' + str(error.description)[:200] if error.description else ''}"
        return await _refresh_failed(row, detail, permanent=error.error == "invalid_grant")
    except (httpx.HTTPError, OSError, ValueError, TypeError, TimeoutError, guard.OutboundRefused) as error:
        return await _refresh_failed(row, describe_error(error), permanent=False)
    now = _now()
    expires_at, next_refresh = schedule(token, now)
    new_refresh = token.get("refresh_token")
    rotated = isinstance(new_refresh, str) and bool(new_refresh) and new_refresh != old_refresh
    async with db.connection() as conn, conn.transaction():
        await conn.execute(vault.DURABLE)
        # One statement: the new access token and, if the provider rotated it, the new refresh token.
        # A response without a refresh token keeps the old one.
        saved = await conn.fetchval(
            "UPDATE oauth_connections SET access_token = $2, refresh_token = COALESCE($3, refresh_token), "
            "token_type = $4, expires_at = $5, next_refresh_at = $6, status = 'active', last_refreshed_at = now(), "
            "refresh_enqueued_at = NULL, refresh_failures = 0, last_error = NULL, updated_at = now(), "
            "scopes_granted = COALESCE($7, scopes_granted), token_generation = token_generation + 1 "
            "WHERE id = $1 AND token_generation = $8 AND status NOT IN ('revoked', 'needs_reauth') RETURNING id",
            connection_id,
            vault.seal_token(connection_id, "access", token["access_token"]),
            vault.seal_token(connection_id, "refresh", str(new_refresh)) if rotated else None,
            str(token.get("token_type") or "Bearer")[:20],
            expires_at,
            next_refresh,
            token.get("scope"),
            row["token_generation"],
        )
        if saved is None:
            return "not_due"  # disconnected, reconnected or refreshed by someone else meanwhile
        detail = "new access token" + (", refresh token rotated" if rotated else "")
        if expires_at:
            detail += f"; expires {expires_at:%Y-%m-%d %H:%M:%S} UTC"
        await audit.record(conn, row["org_id"], connection_id, "refreshed", detail, "system")
    return "refreshed"


async def _refresh_failed(row, detail: str, *, permanent: bool) -> str:
    """invalid_grant (or an unreadable token): needs_reauth, announced. Anything else: retried with backoff.
    Only if the tokens are still the ones this refresh read: otherwise someone else has moved on."""
    async with db.connection() as conn, conn.transaction():
        if permanent:
            changed = await conn.fetchval(
                "UPDATE oauth_connections SET status = 'needs_reauth', last_error = $2, next_refresh_at = NULL, "
                "refresh_enqueued_at = NULL, updated_at = now() "
                "WHERE id = $1 AND token_generation = $3 AND status NOT IN ('revoked', 'needs_reauth') RETURNING id",
                row["id"],
                detail,
                row["token_generation"],
            )
            if changed is None:
                return "not_due"
            await audit.record(conn, row["org_id"], row["id"], "needs_reauth", f"refresh refused: {detail}", "system")
            await events.publish_in(
                conn,
                row["org_id"],
                "oauth.connection.needs_reauth",
                {"connection_id": str(row["id"]), "provider": row["provider"], "error": detail[:200]},
            )
            return "needs_reauth"
        failures = row["refresh_failures"] + 1
        expired = row["expires_at"] is not None and row["expires_at"] <= _now()
        changed = await conn.fetchval(
            "UPDATE oauth_connections SET status = $2, last_error = $3, refresh_failures = $4, "
            "next_refresh_at = now() + $5::interval, refresh_enqueued_at = NULL, updated_at = now() "
            "WHERE id = $1 AND token_generation = $6 AND status NOT IN ('revoked', 'needs_reauth') RETURNING id",
            row["id"],
            "error" if expired else "active",
            detail[:1000],
            failures,
            timedelta(seconds=BACKOFF.seconds(failures)),
            row["token_generation"],
        )
        if changed is None:
            return "not_due"
        await audit.record(conn, row["org_id"], row["id"], "refresh_failed", f"{detail} (attempt {failures})", "system")
    return "failed"


async def due_for_refresh(limit: int = 200) -> list[uuid.UUID]:
    """The scheduler's sweep: connections whose refresh time has come, marked so they are enqueued once
    a minute at most (a worker that died mid-refresh is covered by the next minute's sweep)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "UPDATE oauth_connections SET refresh_enqueued_at = now() WHERE id IN ("
            "SELECT id FROM oauth_connections WHERE status IN ('active', 'error', 'refreshing') "
            "AND refresh_token IS NOT NULL AND next_refresh_at <= now() "
            "AND (refresh_enqueued_at IS NULL OR refresh_enqueued_at < now() - interval '60 seconds') "
            "ORDER BY next_refresh_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id",
            limit,
        )
    return [row["id"] for row in rows]


async def get_access_token(connection_id: uuid.UUID, org_id: uuid.UUID | None = None) -> str:
    """A valid access token for the rest of the code, refreshed first if it is about to lapse.

    Raises TokenUnavailable when there is none to give (reconnect needed, disconnected, or the provider
    cannot be reached and the token has run out); NotFound for another organisation's connection."""
    for _ in range(150):  # waits up to ~30 s for a refresh another process is making
        async with db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT org_id, access_token, refresh_token, expires_at, next_refresh_at, status, last_error "
                "FROM oauth_connections WHERE id = $1",
                connection_id,
            )
        if row is None or (org_id is not None and row["org_id"] != org_id):
            raise NotFound("No such OAuth connection in this organisation.")
        if row["status"] in ("needs_reauth", "revoked") or row["access_token"] is None:
            raise TokenUnavailable(f"the connection is {row['status'].replace('_', ' ')}: an admin must reconnect it")
        if _fresh(row["expires_at"], row["next_refresh_at"], _now()):
            return vault.open_access(connection_id, row["access_token"])
        if row["refresh_token"] is None:
            if row["expires_at"] is not None and row["expires_at"] > _now():
                return vault.open_access(connection_id, row["access_token"])
            raise TokenUnavailable("the access token has expired and there is no refresh token: reconnect it")
        outcome = await refresh(connection_id, on_demand=True)
        if outcome == "busy":
            await asyncio.sleep(0.2)
        elif outcome in ("failed", "needs_reauth", "unavailable"):
            if row["expires_at"] is not None and row["expires_at"] > _now():
                # Still valid for a moment: better than nothing; the sweep retries the refresh.
                return vault.open_access(connection_id, row["access_token"])
            raise TokenUnavailable(f"refreshing failed ({row['last_error'] or outcome}); it is retried with backoff")
    raise TokenUnavailable("another process kept the connection locked for too long")
