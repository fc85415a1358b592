"""Integrations: which provider is active, health checks, failover and failback, and calling a provider.

Traffic goes to one provider at a time, the integration's active one. Health checks and real calls
both feed each provider's circuit breaker (Redis, shared by every process). `evaluate` decides, under a
per-integration advisory lock so that two processes never switch at once:
- **failover** (automatic mode): the active provider's breaker is open; traffic moves to the next
  provider by priority whose breaker lets calls through and whose last check was not a failure;
- **failback** (automatic mode): the primary (the first enabled provider by priority) has been healthy
  for `failback_after_seconds`; traffic returns to it.
Every switch writes a `failover_events` row and publishes `integration.failover` or
`integration.failback`. `call_integration` is the one way to call a provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from app.core import db, outbound, problems
from app.core.crypto import DecryptionError, get_keyring
from app.events import services as events
from app.integrations import breaker, ratelimit
from app.integrations.breaker import BreakerPolicy
from app.oauth import refresh as oauth
from app.oauth.errors import TokenUnavailable

log = logging.getLogger("intime.integrations")
CHECK_TIMEOUT_SECONDS = 10.0
CALL_TIMEOUT_SECONDS = 30.0
MAX_WAIT_FOR_LIMIT_SECONDS = 2.0  # a call over the rate limit waits this long at most, then is deferred
NotFound = problems.NotFound


class NoHealthyProvider(Exception):
    """Every provider of the integration is disabled or failing."""


class Deferred(Exception):
    """Not now: run the call again after `retry_after` seconds (waiting is not failing). Over our rate limit the
    call's slot is booked for then (`reserved_for`: the provider; pass it back to call_integration so
    it does not take a second token); a provider's own 429 books nothing."""

    def __init__(self, retry_after: float, reserved_for: uuid.UUID | None = None, why: str = "") -> None:
        super().__init__(why or f"over the rate limit; retry in {retry_after:.1f} s")
        self.retry_after = retry_after
        self.reserved_for = reserved_for


class CallFailed(Exception):
    """The provider answered with an error or not at all (recorded for its breaker): worth retrying."""


class Rejected(CallFailed):
    """The provider refused the call itself (a 4xx other than 408 and 429): sending it again would not
    help, so it is not retried and does not count against the provider's health."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


PROVIDER_BUSY_SECONDS = 30.0  # a provider's 429 without a usable Retry-After: try again this much later


# Visible ASCII on one line (spaces inside): what an HTTP header value can carry, e.g. a call id or a token.
CALL_ID_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
REFRESH_AFTER_401_SECONDS = 60


def check_call_id(call_id: str) -> str:
    """A call id (the Idempotency-Key) is visible ASCII text on one line, at most 255 characters."""
    if not isinstance(call_id, str) or len(call_id) > 255 or not CALL_ID_RE.fullmatch(call_id):
        raise ValueError(f"call id {call_id!r} is not 1-255 visible ASCII characters")
    return call_id


def check_operation(operation: str) -> str:
    """An operation is a plain name (it becomes the last segment of the provider's URL)."""
    if not operation or len(operation) > 100 or not operation.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"operation {operation!r} is not a plain name")
    return operation


def credentials_context(provider_id: uuid.UUID) -> str:
    return f"integration-provider:{provider_id}"


def policy_of(integration) -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=integration["breaker_failure_threshold"],
        failure_rate=integration["breaker_failure_rate_percent"] / 100,
        min_calls=integration["breaker_min_calls"],
        window_seconds=integration["breaker_window_seconds"],
        cooldown_seconds=integration["breaker_cooldown_seconds"],
        cooldown_max_seconds=integration["breaker_cooldown_max_seconds"],
        probe_successes=integration["breaker_probe_successes"],
    )


# --- Set-up (the seed and tests; app.integrations.setup checks the pages' and the API's input) ------------------------


async def create_integration(
    org_id: uuid.UUID, name: str, kind: str, description: str = "", **settings: Any
) -> uuid.UUID:
    integration_id = uuid.uuid4()
    columns = {"failover_mode", "failback_mode", "failback_after_seconds", "health_interval_seconds"}
    columns |= {f"breaker_{n}" for n in ("failure_threshold", "failure_rate_percent", "min_calls", "window_seconds")}
    columns |= {f"breaker_{n}" for n in ("cooldown_seconds", "cooldown_max_seconds", "probe_successes")}
    unknown = set(settings) - columns
    if unknown:
        raise ValueError(f"unknown integration settings: {', '.join(sorted(unknown))}")
    names = ["id", "org_id", "name", "kind", "description", *settings]
    values = [integration_id, org_id, name, kind, description, *settings.values()]
    placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    async with db.connection() as conn:
        await conn.execute(
            f"INSERT INTO integrations ({', '.join(names)}, created_at, updated_at) "  # noqa: S608
            f"VALUES ({placeholders}, now(), now())",
            *values,
        )
    return integration_id


async def add_provider(
    integration_id: uuid.UUID,
    name: str,
    endpoint_url: str,
    health_url: str,
    *,
    priority: int,
    kind: str = "",
    credentials: str | None = None,
    rate_limit_per_hour: int | None = None,
) -> uuid.UUID:
    for url in (endpoint_url, health_url):
        await outbound.check_url(url)
    provider_id = uuid.uuid4()
    sealed = get_keyring().seal(credentials, credentials_context(provider_id)) if credentials else None
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO integration_providers (id, integration_id, org_id, name, kind, priority, endpoint_url, "
            "health_url, credentials, enabled, rate_limit_per_hour, created_at, updated_at) "
            "SELECT $1, id, org_id, $3, $4, $5, $6, $7, $8, true, $9, now(), now() FROM integrations WHERE id = $2",
            provider_id,
            integration_id,
            name,
            kind,
            priority,
            endpoint_url,
            health_url,
            sealed,
            rate_limit_per_hour,
        )
    return provider_id


# --- State --------------------------------------------------------------------------------------------


@dataclass
class ProviderView:
    row: dict[str, Any]
    breaker: breaker.BreakerState

    @property
    def id(self) -> uuid.UUID:
        return self.row["id"]

    @property
    def usable(self) -> bool:
        """Can take traffic: enabled, its circuit lets calls through, its last check did not fail (never
        checked yet counts: better than nowhere), and it has not refused our credentials."""
        return (
            bool(self.row["enabled"])
            and self.breaker.allows_calls
            and self.row["last_ok"] is not False
            and self.row["credentials_rejected_at"] is None
        )


async def load(conn, integration_id: uuid.UUID, *, lock: bool = False):
    query = (
        "SELECT * FROM integrations WHERE id = $1 FOR UPDATE" if lock else "SELECT * FROM integrations WHERE id = $1"
    )
    integration = await conn.fetchrow(query, integration_id)
    if integration is None:
        raise NotFound("No such integration.")
    rows = await conn.fetch(
        "SELECT * FROM integration_providers WHERE integration_id = $1 ORDER BY priority, created_at", integration_id
    )
    policy = policy_of(integration)
    states = await asyncio.gather(*(breaker.state(row["id"], policy) for row in rows))
    views = [ProviderView(dict(row), state) for row, state in zip(rows, states, strict=True)]
    return integration, views


def active_of(integration, views: list[ProviderView]) -> ProviderView | None:
    """The provider traffic goes to: the chosen one while it is enabled, else the first enabled one."""
    chosen = next((v for v in views if v.id == integration["active_provider_id"]), None)
    if chosen is not None and chosen.row["enabled"]:
        return chosen
    return next((v for v in views if v.row["enabled"]), None)


async def evaluate(integration_id: uuid.UUID) -> str | None:
    """Fail over or back if the providers' health says so; returns "failover", "failback" or None."""
    async with db.connection() as conn, conn.transaction():
        integration, views = await load(conn, integration_id, lock=True)
        active = active_of(integration, views)
        primary = next((v for v in views if v.row["enabled"]), None)
        if primary is None:
            return None
        now = datetime.now(UTC)
        # Failback bookkeeping: how long the primary has been healthy without a break.
        # Healthy enough to fail back to: checked and up (not merely never checked), circuit closed.
        primary_healthy = (
            primary.breaker.state == "closed"
            and primary.row["last_ok"] is True
            and primary.row["credentials_rejected_at"] is None
        )
        since = integration["primary_healthy_since"]
        if primary_healthy and since is None:
            since = now
        elif not primary_healthy:
            since = None
        if since != integration["primary_healthy_since"]:
            await conn.execute(
                "UPDATE integrations SET primary_healthy_since = $2 WHERE id = $1", integration_id, since
            )
        if active is None:
            return None
        rejected = active.row["credentials_rejected_at"] is not None
        if (not active.breaker.allows_calls or rejected) and integration["failover_mode"] == "automatic":
            target = next_usable(views, after=active)
            if target is not None:
                trips = active.breaker.trips
                reason = (
                    f"{active.row['name']} refused our credentials"
                    if rejected
                    else f"{active.row['name']}'s circuit opened" + (f" (trip {trips} in a row)" if trips > 1 else "")
                )
                await switch(conn, integration, active, target, "failover", "automatic", reason, "system")
                return "failover"
        if (
            active.id != primary.id
            and integration["failback_mode"] == "automatic"
            and since is not None
            and now - since >= timedelta(seconds=integration["failback_after_seconds"])
        ):
            reason = f"{primary.row['name']} healthy for {integration['failback_after_seconds']} s"
            await switch(conn, integration, active, primary, "failback", "automatic", reason, "system")
            return "failback"
    return None


def next_usable(views: list[ProviderView], after: ProviderView) -> ProviderView | None:
    """The next usable provider in priority order after `after`, wrapping round to those before it."""
    index = next((n for n, v in enumerate(views) if v.id == after.id), -1)
    for view in views[index + 1 :] + views[: max(index, 0)]:
        if view.id != after.id and view.usable:
            return view
    return None


async def switch(conn, integration, source: ProviderView | None, target: ProviderView, kind, trigger, reason, actor):
    await conn.execute(
        "UPDATE integrations SET active_provider_id = $2, updated_at = now() WHERE id = $1",
        integration["id"],
        target.id,
    )
    await conn.execute(
        "INSERT INTO failover_events (id, integration_id, org_id, kind, from_provider_id, to_provider_id, trigger, "
        "reason, actor, from_provider_name, to_provider_name, at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())",
        uuid.uuid4(),
        integration["id"],
        integration["org_id"],
        kind,
        source.id if source else None,
        target.id,
        trigger,
        reason[:1000],
        actor[:200],
        source.row["name"] if source else None,
        target.row["name"],
    )
    payload = {
        "integration_id": str(integration["id"]),
        "from_provider": source.row["name"] if source else None,
        "to_provider": target.row["name"],
        "trigger": trigger,
        "reason": reason[:300],
    }
    await events.publish_in(conn, integration["org_id"], f"integration.{kind}", payload)
    log.info(
        "integration %s: %s from %s to %s (%s)",
        integration["id"],
        kind,
        payload["from_provider"],
        target.row["name"],
        reason,
    )


async def trigger_failover(
    org_id: uuid.UUID, integration_id: uuid.UUID, reason: str, actor: str, to_provider_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """An admin's "Trigger failover": traffic moves to `to_provider_id`, or else to the next usable
    provider after the active one, audited. Moving it to the primary is a (manual) failback."""
    reason = reason.strip()
    if not reason:
        raise problems.Problem(
            422,
            "Say why you are failing over (the reason goes into the audit trail).",
            [{"field": "reason", "message": "is required"}],
        )
    async with db.connection() as conn, conn.transaction():
        integration, views = await load(conn, integration_id, lock=True)
        if integration["org_id"] != org_id:
            raise NotFound("No such integration in this organisation.")
        active = active_of(integration, views)
        target: ProviderView | None
        if to_provider_id is not None:
            target = _chosen_target(views, active, to_provider_id)
        else:
            target = next_usable(views, after=active) if active else next((v for v in views if v.usable), None)
        if target is None:
            raise problems.Problem(409, "No other provider is enabled and healthy: there is nowhere to fail over to.")
        kind = "failback" if target.id == next(v.id for v in views if v.row["enabled"]) else "failover"
        await switch(conn, integration, active, target, kind, "manual", reason[:1000], actor)
    return {"from": active.row["name"] if active else None, "to": target.row["name"], "kind": kind}


def _chosen_target(views: list[ProviderView], active: ProviderView | None, to_provider_id: uuid.UUID) -> ProviderView:
    """The provider an admin chose to move traffic to, if it can take it; else a 4xx saying why not."""
    target = next((v for v in views if v.id == to_provider_id), None)
    field = [{"field": "to_provider_id", "message": "is not a provider that can take traffic now"}]
    if target is None:
        raise problems.Problem(422, "to_provider_id is not a provider of this integration.", field)
    name = target.row["name"]
    if active is not None and target.id == active.id:
        raise problems.Problem(409, f"Traffic already goes to {name}.", field)
    if not target.row["enabled"]:
        raise problems.Problem(409, f"{name} is disabled: enable it first.", field)
    if not target.usable:
        why = (
            "refused our credentials"
            if target.row["credentials_rejected_at"] is not None
            else f"is failing (circuit {target.breaker.state.replace('_', ' ')}, last check "
            f"{'down' if target.row['last_ok'] is False else 'up'})"
        )
        raise problems.Problem(409, f"{name} {why}: traffic would come straight back. Wait for it to recover.", field)
    return target


# --- Health checks ------------------------------------------------------------------------------------


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


async def check_provider(provider_id: uuid.UUID) -> bool | None:
    """One health check: GET the provider's health URL through the outbound guard; 2xx is up. The result
    is stored, reported to the breaker, and may switch the integration's provider."""
    async with db.connection() as conn:
        provider = await conn.fetchrow("SELECT * FROM integration_providers WHERE id = $1", provider_id)
        if provider is None:
            return None
        integration = await conn.fetchrow("SELECT * FROM integrations WHERE id = $1", provider["integration_id"])
    started = time.perf_counter()
    problem = await _unusable(provider)
    if problem is None:
        ok, status, error_class = await _probe(provider["health_url"])
    else:
        # Up or not, it cannot take calls until an admin mends its credentials or OAuth connection.
        ok, status, error_class = False, None, "credentials"
    latency = int((time.perf_counter() - started) * 1000)
    try:
        await _record_check(provider, ok, latency, status, error_class, problem)
    except asyncpg.ForeignKeyViolationError:
        return None  # the provider was removed while it was being checked
    await breaker.record(provider_id, ok, policy_of(integration))
    await evaluate(provider["integration_id"])
    return ok


async def _record_check(provider, ok: bool, latency: int, status, error_class, problem) -> None:
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


async def _probe(url: str) -> tuple[bool, int | None, str | None]:
    """GET a health URL through the outbound guard: (up, status code, error class)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            response = await outbound.request("GET", url, None, {}, CHECK_TIMEOUT_SECONDS)
            await response.aclose()
    except (httpx.HTTPError, OSError, TimeoutError, outbound.OutboundRefused) as error:
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


# --- Calling a provider -------------------------------------------------------------------------------


async def call_integration(
    integration_id: uuid.UUID,
    operation: str,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    reserved_for: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The one way to call a provider: the active one (failing over first if its circuit is open), within
    its rate limit, its outcome reported to its breaker.

    The provider gets `POST <endpoint>/<operation>` with the payload as JSON, authorised by its sealed
    credentials or by its linked OAuth connection's access token (refreshed first when due), and an
    `Idempotency-Key` header: pass the same key when the same call is made again (tasks.integrations
    keeps one per call across its retries), so a provider that honours it does the work once.

    Over the rate limit the call waits for its slot if that is at most 2 s away, else raises Deferred
    with the slot booked; a provider's 429 raises Deferred too. An error answer or none raises
    CallFailed (Rejected for a 4xx, which retrying would not mend)."""
    check_operation(operation)
    idempotency_key = check_call_id(idempotency_key) if idempotency_key is not None else str(uuid.uuid4())
    body_bytes = json.dumps(payload).encode()  # the caller's mistake, if it fails: not the provider's
    async with db.connection() as conn:
        integration, views = await load(conn, integration_id)
    active = active_of(integration, views)
    if active is not None and not active.breaker.allows_calls:
        await evaluate(integration_id)
        async with db.connection() as conn:
            integration, views = await load(conn, integration_id)
        active = active_of(integration, views)
    if active is None or not active.breaker.allows_calls:
        raise NoHealthyProvider(f"integration {integration['name']}: no provider can take calls now")
    policy = policy_of(integration)
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
    try:
        token = await _bearer_token(active, integration["org_id"])
        if token is not None and (len(token) > 8192 or not CALL_ID_RE.fullmatch(token)):
            raise CallFailed(f"{active.row['name']}: its token or key is not sendable in an HTTP header")
    except CallFailed:
        # The provider cannot be called without it: count it, so traffic moves to one that can.
        await breaker.record(active.id, False, policy)
        await evaluate(integration_id)
        raise
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    limit = active.row["rate_limit_per_hour"]
    if limit and reserved_for != active.id:  # a call deferred for this provider already holds its slot
        slot = await ratelimit.take(active.id, limit, reserve=True)
        if not slot.taken:  # even the booking is full: an hour's worth of calls already wait
            raise Deferred(slot.wait_seconds)
        if slot.wait_seconds > MAX_WAIT_FOR_LIMIT_SECONDS:
            raise Deferred(slot.wait_seconds, reserved_for=active.id)
        await asyncio.sleep(slot.wait_seconds)
    url = active.row["endpoint_url"].rstrip("/") + "/" + operation
    try:
        async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
            response = await outbound.request("POST", url, body_bytes, headers, CALL_TIMEOUT_SECONDS)
            try:
                raw = (await response.aread())[:1_000_000]
            finally:
                await response.aclose()
    except (httpx.HTTPError, OSError, TimeoutError, outbound.OutboundRefused) as error:
        await breaker.record(active.id, False, policy)
        await evaluate(integration_id)
        raise CallFailed(f"{active.row['name']}: {outbound.classify_error(error)}") from None
    status = response.status_code
    if status == 429:  # the provider's own limit: not a fault of its health; come back when it says
        wait = _retry_after(response.headers.get("retry-after"))
        raise Deferred(wait, why=f"{active.row['name']} is busy (HTTP 429); retry in {wait:.0f} s")
    # 401 and 403 say our credentials no longer work there: every call would fail, so they count
    # against the provider and are tried again (on another provider), not refused.
    unauthorised = status in (401, 403)
    state = await breaker.record(active.id, status < 500 and status != 408 and not unauthorised, policy)
    if unauthorised:
        if not (status == 401 and await _refreshed_after_401(active.row["oauth_connection_id"])):
            await _credentials_rejected(active, status)
        await evaluate(integration_id)
        raise CallFailed(
            f"{active.row['name']} did not accept our credentials (HTTP {status}): check its credentials or "
            "OAuth connection"
        )
    if not state.allows_calls:
        await evaluate(integration_id)
    if status < 400 and active.row["credentials_rejected_at"] is not None:
        await _credentials_accepted(active)
    text = raw[:2000].decode("utf-8", "replace")
    if 400 <= status < 500 and status != 408:
        raise Rejected(f"{active.row['name']} refused the call: HTTP {status}", status, text)
    if status >= 400:
        raise CallFailed(f"{active.row['name']} answered HTTP {status}")
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"text": raw[:10_000].decode("utf-8", "replace")}
    return {"provider": active.row["name"], "status": status, "body": body}


async def _refreshed_after_401(connection_id: uuid.UUID | None) -> bool:
    """A 401 on an OAuth provider: its token may have been revoked or cut short there, so get a new one
    for the next attempt, unless one was got in the last minute (then the token is not the problem, and
    refreshing on every failed call would hammer the identity provider). True if a new token came."""
    if connection_id is None:
        return False
    async with db.connection() as conn:
        last = await conn.fetchval("SELECT last_refreshed_at FROM oauth_connections WHERE id = $1", connection_id)
    if last is not None and datetime.now(UTC) - last < timedelta(seconds=REFRESH_AFTER_401_SECONDS):
        return False
    return await oauth.refresh(connection_id, on_demand=True, force=True) == "refreshed"


async def _credentials_rejected(provider: ProviderView, status: int) -> None:
    """Out of traffic until an admin saves the provider again (or a call to it succeeds, when it is the
    only one left): its health checks carry no credentials, so they would bring it back at once."""
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE integration_providers SET credentials_rejected_at = now(), last_ok = false, last_error = $2 "
            "WHERE id = $1 AND credentials_rejected_at IS NULL",
            provider.id,
            f"it refused our credentials (HTTP {status}): update them, then save the provider",
        )
    log.warning("provider %s (%s) refused our credentials: HTTP %s", provider.row["name"], provider.id, status)


async def _credentials_accepted(provider: ProviderView) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE integration_providers SET credentials_rejected_at = NULL, last_error = NULL WHERE id = $1",
            provider.id,
        )


def _retry_after(value: str | None) -> float:
    """A Retry-After header's seconds (1 s to 1 h), or the default when it is missing or a date."""
    try:
        return min(3600.0, max(1.0, float(value))) if value else PROVIDER_BUSY_SECONDS
    except ValueError:
        return PROVIDER_BUSY_SECONDS


async def _bearer_token(provider: ProviderView, org_id: uuid.UUID) -> str | None:
    """What authorises a call: the provider's OAuth connection's access token, else its credentials."""
    if provider.row["oauth_connection_id"] is not None:
        try:
            return await oauth.get_access_token(provider.row["oauth_connection_id"], org_id)
        except (TokenUnavailable, NotFound) as error:
            raise CallFailed(f"{provider.row['name']}: no OAuth token ({error})") from None
    if provider.row["credentials"]:
        try:
            return get_keyring().open(provider.row["credentials"], credentials_context(provider.id))
        except DecryptionError as error:
            raise CallFailed(f"{provider.row['name']}: its credentials cannot be read ({error})") from None
    return None


# --- Reading and configuring (pages and API) ----------------------------------------------------------

FAILOVER_LIMITS = {
    "failback_after_seconds": (0, 86_400),
    "health_interval_seconds": (5, 86_400),
    "breaker_failure_threshold": (1, 1000),
    "breaker_failure_rate_percent": (1, 100),
    "breaker_min_calls": (1, 100_000),
    "breaker_window_seconds": (5, 86_400),
    "breaker_cooldown_seconds": (1, 86_400),
    "breaker_cooldown_max_seconds": (1, 604_800),
    "breaker_probe_successes": (1, 100),
}
MODES = {"failover_mode": ("automatic", "manual"), "failback_mode": ("automatic", "manual")}


def failover_config(integration) -> dict[str, Any]:
    return {name: integration[name] for name in (*MODES, *FAILOVER_LIMITS)}


async def owned(conn, org_id: uuid.UUID, integration_id: uuid.UUID):
    row = await conn.fetchrow("SELECT * FROM integrations WHERE id = $1 AND org_id = $2", integration_id, org_id)
    if row is None:
        raise NotFound("No such integration in this organisation.")
    return row


async def update_failover(org_id: uuid.UUID, integration_id: uuid.UUID, data: Any) -> dict[str, Any]:
    """Replace the failover settings; every field is checked, and nothing is saved unless all are good."""
    if not isinstance(data, dict):
        raise problems.Problem(422, "The failover settings are a JSON object.")
    errors = []
    unknown = set(data) - set(MODES) - set(FAILOVER_LIMITS)
    errors += [{"field": name, "message": "is not a failover setting"} for name in sorted(unknown)]
    values: dict[str, Any] = {}
    for name, allowed in MODES.items():
        if name in data:
            if data[name] not in allowed:
                errors.append({"field": name, "message": f"is one of {', '.join(allowed)}"})
            else:
                values[name] = data[name]
    for name, (low, high) in FAILOVER_LIMITS.items():
        if name in data:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                errors.append({"field": name, "message": f"is a whole number from {low:,} to {high:,}"})
            else:
                values[name] = value
    async with db.connection() as conn, conn.transaction():
        current = await owned(conn, org_id, integration_id)
        merged = failover_config(current) | values
        if merged["breaker_cooldown_max_seconds"] < merged["breaker_cooldown_seconds"]:
            errors.append({"field": "breaker_cooldown_max_seconds", "message": "is at least the cooldown"})
        if errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise problems.Problem(422, f"The failover settings are not valid: {detail}", errors)
        if values:
            assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(values, start=2))
            await conn.execute(
                f"UPDATE integrations SET {assignments}, updated_at = now() WHERE id = $1",  # noqa: S608
                integration_id,
                *values.values(),
            )
    return merged


async def overview(
    org_id: uuid.UUID,
    integration_id: uuid.UUID | None = None,
    *,
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Integrations with their providers (never credentials), which one is active, and each provider's
    health: its breaker, its last check and its rate-limit use. All of them by name (pages), one, or a
    page of them in creation order after `after` (the API's keyset pagination)."""
    async with db.connection() as conn:
        if integration_id is None and limit is None:
            rows = await conn.fetch("SELECT id FROM integrations WHERE org_id = $1 ORDER BY name", org_id)
            ids = [r["id"] for r in rows]
        elif integration_id is None:
            at, last = after or (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))
            rows = await conn.fetch(
                "SELECT id FROM integrations WHERE org_id = $1 AND (created_at, id) > ($2, $3) "
                "ORDER BY created_at, id LIMIT $4",
                org_id,
                at,
                last,
                limit,
            )
            ids = [r["id"] for r in rows]
        else:
            ids = [(await owned(conn, org_id, integration_id))["id"]]
        out = []
        for one in ids:
            integration, views = await load(conn, one)
            active = active_of(integration, views)
            providers_out = []
            uses = await asyncio.gather(*(_used_this_hour(view) for view in views))
            for view, used in zip(views, uses, strict=True):
                row, limit = view.row, view.row["rate_limit_per_hour"]
                providers_out.append(
                    {
                        "id": str(view.id),
                        "name": row["name"],
                        "kind": row["kind"],
                        "priority": row["priority"],
                        "endpoint_url": row["endpoint_url"],
                        "health_url": row["health_url"],
                        "enabled": row["enabled"],
                        "active": active is not None and view.id == active.id,
                        "has_credentials": row["credentials"] is not None,
                        "oauth_connection_id": str(row["oauth_connection_id"]) if row["oauth_connection_id"] else None,
                        "circuit": view.breaker.state,
                        "circuit_retry_at": view.breaker.retry_at,
                        "last_checked_at": row["last_checked_at"],
                        "last_ok": row["last_ok"],
                        "last_latency_ms": row["last_latency_ms"],
                        "last_error": row["last_error"],
                        "rate_limit_per_hour": limit,
                        "used_this_hour": used,
                    }
                )
            out.append(
                {
                    "id": str(integration["id"]),
                    "name": integration["name"],
                    "kind": integration["kind"],
                    "description": integration["description"],
                    "active_provider": active.row["name"] if active else None,
                    "healthy": active is not None and active.usable,
                    "failover": failover_config(integration),
                    "providers": providers_out,
                    "created_at": integration["created_at"],
                }
            )
    return out


async def _used_this_hour(view: ProviderView) -> int | None:
    limit = view.row["rate_limit_per_hour"]
    return await ratelimit.used_this_hour(view.id, limit) if limit else None


async def audit_trail(org_id: uuid.UUID, integration_id: uuid.UUID, limit: int = 50) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        await owned(conn, org_id, integration_id)
        rows = await conn.fetch(
            # The names as they were at the switch (the provider may since be renamed or removed).
            "SELECT kind, trigger, reason, actor, at, from_provider_name AS from_provider, "
            "to_provider_name AS to_provider FROM failover_events WHERE integration_id = $1 ORDER BY at DESC LIMIT $2",
            integration_id,
            limit,
        )
    return [dict(r) for r in rows]


async def health_strips(org_id: uuid.UUID, integration_id: uuid.UUID, per_provider: int = 40) -> dict[str, list]:
    """The last checks of each provider, oldest first, for the history strip."""
    async with db.connection() as conn:
        await owned(conn, org_id, integration_id)
        rows = await conn.fetch(
            "SELECT c.provider_id, c.at, c.ok, c.latency_ms, c.status_code, c.error_class FROM integration_providers p "
            "CROSS JOIN LATERAL (SELECT * FROM health_checks h WHERE h.provider_id = p.id ORDER BY h.at DESC "
            "LIMIT $2) c WHERE p.integration_id = $1",
            integration_id,
            per_provider,
        )
    strips: dict[str, list] = {}
    for row in sorted(rows, key=lambda r: r["at"]):
        strips.setdefault(str(row["provider_id"]), []).append(dict(row))
    return strips
