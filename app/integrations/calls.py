"""Calling a provider: this is how the rest of the platform talks to an integration.

`call_integration` is the one way to make a call: to the active provider (failing over first if its
circuit is open), within its rate limit, its outcome reported to its breaker. `enqueue_call` records a
call in PostgreSQL (integration_calls) and hands it to the workers (tasks.integrations.call_provider,
app.integrations.background), which make it with `call_integration`. A call over the provider's rate
limit is deferred and sent again when a token is due (waiting is not failing); a failing call is
retried with backoff; the row keeps the schedule, so a message lost with Redis is re-sent by the
scheduler's sweep (app.integrations.call_sweep). The call id travels with every attempt as the
`Idempotency-Key` header, so a provider that honours it does the work once even when the same call
reaches it twice (the queue delivers at least once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis.exceptions
from dramatiq.errors import BrokerConnectionError

from app.core import db, guard, outbound, queue
from app.core.crypto import DecryptionError, get_keyring
from app.core.problems import NotFound
from app.core.times import parse_retry_after
from app.integrations import breaker, call_rows, ratelimit
from app.integrations.failover import evaluate
from app.integrations.state import ProviderView, active_of, credentials_context, load, policy_of
from app.oauth import refresh as oauth
from app.oauth.errors import TokenUnavailable

log = logging.getLogger("intime.integrations")
CALL_TIMEOUT_SECONDS = 30.0
MAX_WAIT_FOR_LIMIT_SECONDS = 2.0  # a call over the rate limit waits this long at most, then is deferred
PROVIDER_BUSY_SECONDS = 30.0  # a provider's 429 without a usable Retry-After: try again this much later
REFRESH_AFTER_401_SECONDS = 60
# Visible ASCII on one line (spaces inside): what an HTTP header value can carry, e.g. a call id or a token.
CALL_ID_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


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


async def enqueue_call(
    integration_id: uuid.UUID, operation: str, payload: dict[str, Any], *, call_id: str | None = None
) -> str:
    """Enqueue `POST <endpoint>/<operation>` with `payload` to the integration's active provider; returns
    the call id. Pass your own `call_id` when the same call may be enqueued twice (a redelivered event,
    say): the second enqueue of a call id the integration already has is the same call, not another.

    The call is a row in PostgreSQL before it is a message in Redis: once this returns, the call is
    made even if the message is lost (the sweep re-sends it). NotFound: no such integration."""
    row_id, call_id, new = await record_call(integration_id, operation, payload, call_id=call_id)
    if new:
        try:
            await send_call(row_id)
        except (redis.exceptions.RedisError, BrokerConnectionError, OSError) as error:
            log.warning("call %s recorded; its message waits for the sweep (Redis: %s)", call_id, error)
    return call_id


async def record_call(
    integration_id: uuid.UUID,
    operation: str,
    payload: dict[str, Any],
    *,
    call_id: str | None = None,
    failures: int = 0,
    deferrals: int = 0,
    reserved_for: uuid.UUID | None = None,
) -> tuple[uuid.UUID, str, bool]:
    """The call's row, due now, without a message: (row id, call id, whether the row is new)."""
    # Refused here, the caller learns of it now, not from a worker's log.
    check_operation(operation)
    call_id = check_call_id(call_id) if call_id is not None else str(uuid.uuid4())
    body = json.dumps(payload)
    async with db.connection() as conn:
        row_id = await conn.fetchval(
            call_rows.INSERT, uuid.uuid4(), call_id, integration_id, operation, body, failures, deferrals, reserved_for
        )
        if row_id is not None:
            return row_id, call_id, True
        existing = await conn.fetchval(call_rows.EXISTING, integration_id, call_id)
    if existing is None:
        raise NotFound("No such integration.")
    return existing, call_id, False


async def send_call(row_id: uuid.UUID, delay_ms: int | None = None) -> None:
    """Wake a worker for the call (now, or in `delay_ms`): the message carries only the row's id."""
    await queue.asend("call_provider", str(row_id), delay_ms=delay_ms or None)


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
    except (httpx.HTTPError, OSError, TimeoutError, guard.OutboundRefused) as error:
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


def _retry_after(value: str | None) -> float:
    """A provider's Retry-After (seconds or an HTTP date) kept within 1 s to 1 h: a provider must not
    hold a call for days, nor bring it back at once; missing or unreadable, the default."""
    seconds = parse_retry_after(value, datetime.now(UTC))
    return PROVIDER_BUSY_SECONDS if seconds is None else min(3600.0, max(1.0, seconds))


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
