"""Health checks of integration providers: the scheduler's sweep finds the providers that are due, a
worker checks each one (`check_provider`), and the result feeds the provider's breaker and then
`failover.evaluate`, which may move traffic.

A check is a GET of the provider's health URL through the outbound guard; 2xx is up. A provider whose
credentials were refused, or whose OAuth connection cannot authorise calls, counts as down whatever
its health URL says: the URL carries no credentials, so it would otherwise bring it back at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx

from app.core import db, guard, outbound
from app.events import services as events
from app.integrations import breaker
from app.integrations.failover import evaluate
from app.integrations.state import policy_of

CHECK_TIMEOUT_SECONDS = 10.0


async def due_health_checks(limit: int = 500) -> list[uuid.UUID]:
    """The scheduler's sweep: providers whose check interval has passed (each enqueued once per interval)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "UPDATE integration_providers SET check_enqueued_at = now() WHERE id IN ("
            "SELECT p.id FROM integration_providers p JOIN integrations i ON i.id = p.integration_id "
            "WHERE p.enabled AND (p.last_checked_at IS NULL OR "
            "p.last_checked_at <= now() - make_interval(secs => i.health_interval_seconds)) "
            "AND (p.check_enqueued_at IS NULL OR p.check_enqueued_at <= now() - make_interval(secs => "
            "i.health_interval_seconds)) ORDER BY p.last_checked_at NULLS FIRST LIMIT $1 "
            "FOR UPDATE OF p SKIP LOCKED) RETURNING id",
            limit,
        )
    return [row["id"] for row in rows]


async def check_provider(provider_id: uuid.UUID, *, now: float | None = None) -> bool | None:
    """One health check: GET the provider's health URL through the outbound guard; 2xx is up. The result
    is stored, reported to the breaker, and may switch the integration's provider. `now` (Unix
    seconds) is the breaker's and the failback's clock, for tests that must not sleep through a cooldown."""
    async with db.connection() as conn:
        provider = await conn.fetchrow("SELECT * FROM integration_providers WHERE id = $1", provider_id)
        if provider is None:
            return None
        integration = await conn.fetchrow("SELECT * FROM integrations WHERE id = $1", provider["integration_id"])
    started = time.perf_counter()
    problem = await _unusable(provider)
    if problem is None:
        ok, status, error_class = await probe(provider["health_url"])
    else:
        # Up or not, it cannot take calls until an admin mends its credentials or OAuth connection.
        ok, status, error_class = False, None, "credentials"
    latency = int((time.perf_counter() - started) * 1000)
    try:
        await record(provider, ok, latency, status, error_class, problem)
    except asyncpg.ForeignKeyViolationError:
        return None  # the provider was removed while it was being checked
    await breaker.record(provider_id, ok, policy_of(integration), now=now)
    await evaluate(provider["integration_id"], now=now)
    return ok


async def record(provider, ok: bool, latency: int, status, error_class, problem) -> None:
    """Store a check's result on the provider and in its history; a change of health is announced."""
    provider_id = provider["id"]
    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO health_checks (id, provider_id, org_id, at, ok, latency_ms, status_code, error_class) "
            "VALUES ($1, $2, $3, now(), $4, $5, $6, $7)",
            uuid.uuid4(),
            provider_id,
            provider["org_id"],
            ok,
            latency,
            status,
            error_class,
        )
        await conn.execute(
            "UPDATE integration_providers SET last_checked_at = now(), check_enqueued_at = NULL, last_ok = $2, "
            "last_latency_ms = $3, last_error = $4 WHERE id = $1",
            provider_id,
            ok,
            latency,
            None if ok else (problem or (f"HTTP {status}" if status else error_class)),
        )
        if provider["last_ok"] is not ok and not (provider["last_ok"] is None and ok):
            # Went down, or came back: a first check that finds it up is not news.
            payload = {
                "integration_id": str(provider["integration_id"]),
                "provider_id": str(provider_id),
                "provider": provider["name"],
                "healthy": ok,
                "error": None if ok else error_class,
            }
            await events.publish_in(conn, provider["org_id"], "integration.health_changed", payload)


async def probe(url: str) -> tuple[bool, int | None, str | None]:
    """GET a health URL through the outbound guard: (up, status code, error class)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            response = await outbound.request("GET", url, None, {}, CHECK_TIMEOUT_SECONDS)
            await response.aclose()
    except (httpx.HTTPError, OSError, TimeoutError, guard.OutboundRefused) as error:
        return False, None, outbound.classify_error(error)
    ok = 200 <= response.status_code < 300
    return ok, response.status_code, None if ok else "http_status"


async def _unusable(provider) -> str | None:
    """Why a provider cannot take calls whatever its health URL says, or None: it refused our
    credentials, or its linked OAuth connection cannot authorise calls."""
    if provider["credentials_rejected_at"] is not None:
        return "it refused our credentials (HTTP 401/403): update them, then save the provider"
    connection_id = provider["oauth_connection_id"]
    if connection_id is None:
        return None
    async with db.connection() as conn:
        row = await conn.fetchrow("SELECT status, access_token FROM oauth_connections WHERE id = $1", connection_id)
    if row is None:
        return "its OAuth connection was deleted: link another"
    if row["status"] in ("needs_reauth", "revoked") or row["access_token"] is None:
        return f"its OAuth connection is {row['status'].replace('_', ' ')}: reconnect it"
    return None
