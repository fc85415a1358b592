"""The delivery engine: fan-out, claim, send, record, and the retry decision.

State machine (DESIGN): pending -> processing -> success; processing -> failed (retry scheduled at
next_attempt_at) -> processing ...; processing -> dlq; dlq -> pending (retry from the DLQ). Every
transition is one conditional UPDATE, so concurrent workers, duplicate messages and a scheduler
sweep can all race without two of them sending the same attempt: whoever's UPDATE matches owns it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.core import db, outbound
from app.webhooks import retry, services, signing
from app.webhooks.tables import DlqReason

USER_AGENT = "InTime-Webhooks/0.1.0"
RESPONSE_BODY_CAP = 64 * 1024
# A claim holds the delivery for the webhook's timeout plus this margin. If the worker dies mid-send,
# the lease runs out and the sweep hands the delivery to another worker: at least once, never lost.
LEASE_MARGIN_SECONDS = 30
AUTO_DISABLE_AFTER = 10  # consecutive failed attempts: long enough to ride out a deploy, short enough
# not to pile up hours of retries against an endpoint that is plainly gone.
SENSITIVE_HEADER_WORDS = ("authorization", "cookie", "secret", "token", "password", "api-key", "apikey")


@dataclass(frozen=True)
class RetryRequest:
    """What the actor hands to the backoff middleware: this delivery failed in a retryable way."""

    delivery_id: str
    retry_after_ms: int | None


# --- fan-out ----------------------------------------------------------------------------------------------


async def fan_out_backlog(limit: int = 500) -> tuple[int, list[uuid.UUID]]:
    """Turn events not yet fanned out into deliveries, in one transaction, idempotently.

    Rows are taken with SKIP LOCKED, so several schedulers share the backlog without waiting on each
    other; the unique (event, webhook) index makes a repeat harmless. Returns how many events it took
    and the new delivery ids.
    """
    async with db.connection() as conn, conn.transaction():
        events = await conn.fetch(
            "SELECT e.id, e.org_id, e.event_type, e.metadata, t.domain FROM events e "
            "LEFT JOIN event_types t ON t.name = e.event_type "
            "WHERE e.fanned_out_at IS NULL ORDER BY e.created_at LIMIT $1 FOR UPDATE OF e SKIP LOCKED",
            limit,
        )
        if not events:
            return 0, []
        org_ids = list({row["org_id"] for row in events})
        hooks = await conn.fetch(
            "SELECT id, org_id, event_patterns FROM webhooks WHERE org_id = ANY($1) AND enabled AND deleted_at IS NULL",
            org_ids,
        )
        by_org: dict[uuid.UUID, list] = {}
        for hook in hooks:
            by_org.setdefault(hook["org_id"], []).append(hook)
        ids, webhook_ids, event_ids, org_col, types = [], [], [], [], []
        for event in events:
            target = json.loads(event["metadata"] or "{}").get("target_webhook_id")
            for hook in by_org.get(event["org_id"], ()):
                wanted = str(hook["id"]) == target if target else _matches(hook["event_patterns"], event)
                if wanted:
                    ids.append(uuid.uuid4())
                    webhook_ids.append(hook["id"])
                    event_ids.append(event["id"])
                    org_col.append(event["org_id"])
                    types.append(event["event_type"])
        created = []
        if ids:
            created = await conn.fetch(
                "INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, event_type, status, "
                "next_attempt_at, created_at, updated_at) "
                "SELECT u.id, u.org_id, u.webhook_id, u.event_id, u.event_type, 'pending', now(), now(), now() "
                "FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[]) "
                "AS u(id, org_id, webhook_id, event_id, event_type) "
                "ON CONFLICT (event_id, webhook_id) DO NOTHING RETURNING id",
                ids,
                org_col,
                webhook_ids,
                event_ids,
                types,
            )
        await conn.execute("UPDATE events SET fanned_out_at = now() WHERE id = ANY($1)", [row["id"] for row in events])
    return len(events), [row["id"] for row in created]


def _matches(event_patterns: list[str], event) -> bool:
    from app.webhooks.patterns import matches_any

    return matches_any(event_patterns, event["event_type"], event["domain"])


# --- claim, send, record ---------------------------------------------------------------------------------

CLAIM_SQL = """
WITH claimed AS (
    UPDATE webhook_deliveries d
    SET status = 'processing', attempt_count = d.attempt_count + 1, updated_at = now(),
        lease_expires_at = now() + make_interval(secs => w.timeout_seconds + $2)
    FROM webhooks w
    WHERE d.id = $1 AND w.id = d.webhook_id
      AND (d.status IN ('pending', 'failed') OR (d.status = 'processing' AND d.lease_expires_at < now()))
    RETURNING d.id, d.org_id, d.webhook_id, d.event_id, d.event_type, d.attempt_count, d.attempts_base,
              d.next_trigger, w.url, w.secret, w.previous_secret, w.previous_secret_expires_at, w.headers,
              w.timeout_seconds, w.enabled, w.deleted_at
)
SELECT c.*, e.payload::text AS payload, e.metadata::text AS metadata, e.aggregate_id, e.created_at AS event_at
FROM claimed c JOIN events e ON e.id = c.event_id
"""


def build_body(row) -> bytes:
    """The request body (CONTRACT). Payload and metadata are spliced in as PostgreSQL rendered them,
    so the bytes are the same on every attempt and no JSON is parsed on the hot path."""
    head = {
        "id": str(row["event_id"]),
        "type": row["event_type"],
        "timestamp": row["event_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "org_id": str(row["org_id"]),
        "aggregate_id": str(row["aggregate_id"]) if row["aggregate_id"] else None,
    }
    prefix = json.dumps(head, separators=(",", ":"))[:-1]
    return f'{prefix},"data":{row["payload"]},"metadata":{row["metadata"]}}}'.encode()


def redact(headers: dict[str, str]) -> dict[str, str]:
    return {
        name: "[redacted]" if any(word in name.lower() for word in SENSITIVE_HEADER_WORDS) else value
        for name, value in headers.items()
    }


def parse_retry_after(value: str | None) -> int | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((when - datetime.now(UTC)).total_seconds() * 1000))


@dataclass
class Sent:
    status: int | None
    headers: dict[str, str] | None
    body: str | None
    truncated: bool
    error_class: str | None
    error_message: str | None
    duration_ms: int


async def send(url: str, body: bytes, headers: dict[str, str], timeout_seconds: int) -> Sent:
    client = outbound.shared_client()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds + 1):
            request = client.build_request(
                "POST", url, content=body, headers=headers, timeout=httpx.Timeout(timeout_seconds)
            )
            response = await client.send(request, stream=True)
            try:
                chunks, size, truncated = [], 0, False
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > RESPONSE_BODY_CAP:
                        truncated = True
                        break
            finally:
                await response.aclose()
        raw = b"".join(chunks)[:RESPONSE_BODY_CAP]
        return Sent(
            response.status_code,
            dict(response.headers),
            raw.decode("utf-8", "replace"),
            truncated,
            None,
            None,
            _ms(started),
        )
    except (TimeoutError, httpx.HTTPError, OSError, outbound.OutboundRefused) as error:
        return Sent(
            None, None, None, False, outbound.classify_error(error), str(error) or type(error).__name__, _ms(started)
        )


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def deliver(delivery_id: str) -> RetryRequest | None:
    """One attempt of one delivery. Returns a RetryRequest when the backoff middleware must decide."""
    async with db.connection() as conn:
        row = await conn.fetchrow(CLAIM_SQL, uuid.UUID(str(delivery_id)), LEASE_MARGIN_SECONDS)
        if row is None:
            return None  # done, in the DLQ, or another worker holds it: nothing to do
        trigger = row["next_trigger"]
        if (row["deleted_at"] is not None or not row["enabled"]) and trigger != "test":
            reason = DlqReason.webhook_deleted if row["deleted_at"] is not None else DlqReason.webhook_disabled
            async with conn.transaction():
                await _to_dlq(conn, row, reason, undo_attempt=True)
            return None

    now = datetime.now(UTC)
    body = build_body(row)
    secrets = services.live_secrets(
        row["webhook_id"], row["secret"], row["previous_secret"], row["previous_secret_expires_at"], now
    )
    custom = json.loads(row["headers"] or "{}")
    headers = {
        **custom,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signing.signature_headers(str(row["id"]), row["event_type"], body, secrets, now),
    }
    sent = await send(row["url"], body, headers, row["timeout_seconds"])

    status = sent.status
    if status is not None and 200 <= status < 300:
        outcome = "success"
    elif status == 410:
        outcome = "gone"
    elif status is not None and 400 <= status < 500 and status not in (408, 429):
        outcome = "non_retryable"
    else:
        outcome = "failed"

    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO delivery_attempts (id, delivery_id, attempt_number, trigger, started_at, duration_ms, "
            "request_url, request_headers, response_status, response_headers, response_body, response_truncated, "
            "error_class, error_message, outcome) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10::jsonb, $11, $12, $13, $14, $15)",
            uuid.uuid4(),
            row["id"],
            row["attempt_count"],
            trigger,
            now,
            sent.duration_ms,
            row["url"],
            json.dumps(redact(headers)),
            status,
            json.dumps(sent.headers) if sent.headers is not None else None,
            sent.body,
            sent.truncated,
            sent.error_class,
            sent.error_message,
            outcome,
        )
        last_error = sent.error_message if status is None else f"HTTP {status}"
        if outcome == "success":
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'success', completed_at = now(), updated_at = now(), "
                "lease_expires_at = NULL, next_attempt_at = NULL, last_status_code = $2, last_error = NULL, "
                "next_trigger = 'scheduled' WHERE id = $1",
                row["id"],
                status,
            )
            await conn.execute(
                "UPDATE webhooks SET consecutive_failures = 0 WHERE id = $1 AND consecutive_failures <> 0",
                row["webhook_id"],
            )
            return None
        await conn.execute(
            "UPDATE webhook_deliveries SET last_status_code = $2, last_error = $3 WHERE id = $1",
            row["id"],
            status,
            last_error,
        )
        if outcome == "gone":
            await _to_dlq(conn, row, DlqReason.gone)
            await services.disable_in_transaction(
                conn, row["org_id"], row["webhook_id"], "the endpoint answered 410 Gone"
            )
            return None
        failures = await conn.fetchval(
            "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1 WHERE id = $1 "
            "RETURNING consecutive_failures",
            row["webhook_id"],
        )
        disabled = failures >= AUTO_DISABLE_AFTER and await services.disable_in_transaction(
            conn, row["org_id"], row["webhook_id"], f"{AUTO_DISABLE_AFTER} consecutive failed attempts"
        )
        if outcome == "non_retryable":
            await _to_dlq(conn, row, DlqReason.non_retryable)
            return None
        if disabled:
            await _to_dlq(conn, row, DlqReason.webhook_disabled)
            return None
    return RetryRequest(str(row["id"]), parse_retry_after((sent.headers or {}).get("retry-after")))


async def _to_dlq(conn, row, reason: DlqReason, undo_attempt: bool = False) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'dlq', dlq_reason = $2, dlq_at = now(), updated_at = now(), "
        "lease_expires_at = NULL, next_attempt_at = NULL, cleared_at = NULL, cleared_by = NULL, "
        "attempt_count = attempt_count - $3 WHERE id = $1",
        row["id"],
        reason.value,
        1 if undo_attempt else 0,
    )
    await services.announce_dead_letter(
        conn, row["org_id"], row["webhook_id"], row["id"], row["event_type"], reason.value
    )


async def schedule_retry(delivery_id: str, retry_after_ms: int | None) -> int | None:
    """The backoff decision, made by the middleware: read the delivery's policy, then either schedule
    the next attempt (status failed, next_attempt_at) or send the delivery to the DLQ. Returns the delay
    in ms for the re-enqueue, or None."""
    async with db.connection() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT d.id, d.org_id, d.webhook_id, d.event_type, d.attempt_count, d.attempts_base, "
            "w.retry_policy::text AS override FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "
            "WHERE d.id = $1 AND d.status = 'processing' FOR UPDATE OF d",
            uuid.UUID(delivery_id),
        )
        if row is None:
            return None  # something else moved it on (a replay, a lease sweep): nothing to decide
        policy = services.effective_policy(row["override"], await _org_policy(conn, row["org_id"]))
        delay = retry.next_delay_ms(policy, row["attempt_count"] - row["attempts_base"], retry_after_ms)
        if delay is None:
            await _to_dlq(conn, row, DlqReason.retries_exhausted)
            return None
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'failed', lease_expires_at = NULL, updated_at = now(), "
            "next_attempt_at = now() + make_interval(secs => $2::float8 / 1000), next_trigger = 'scheduled' "
            "WHERE id = $1",
            row["id"],
            delay,
        )
        await conn.execute(
            "UPDATE delivery_attempts SET next_delay_ms = $3 WHERE delivery_id = $1 AND attempt_number = $2",
            row["id"],
            row["attempt_count"],
            delay,
        )
    return delay


async def _org_policy(conn, org_id) -> retry.Policy:
    found = await conn.fetchrow(
        "SELECT strategy, base_delay_ms, max_delay_ms, max_retries, jitter FROM retry_policies WHERE org_id = $1",
        org_id,
    )
    return retry.Policy(**dict(found)) if found else retry.DEFAULT_POLICY


# --- what the scheduler sweeps ---------------------------------------------------------------------------

SWEEP_GRACE = timedelta(seconds=10)
SWEEP_RECHECK = timedelta(seconds=60)


async def sweep_lost(limit: int = 1000, grace: timedelta = SWEEP_GRACE) -> list[uuid.UUID]:
    """Deliveries whose message must have been lost (Redis wiped, an enqueue that failed) or whose
    worker died mid-send (lease expired): re-enqueue them. A dead worker's attempt is recorded as
    `lost`, since it may or may not have reached the receiver, and the delivery goes back to pending.
    Each is pushed a minute ahead first, so a busy queue is not flooded with duplicates every tick."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            """
            WITH lost AS (
                SELECT id, status FROM webhook_deliveries
                WHERE (status IN ('pending', 'failed') AND next_attempt_at < now() - $1::interval)
                   OR (status = 'processing' AND lease_expires_at < now())
                LIMIT $3 FOR UPDATE SKIP LOCKED
            ), recorded AS (
                INSERT INTO delivery_attempts (id, delivery_id, attempt_number, trigger, started_at, request_url,
                                               error_class, error_message, outcome)
                SELECT gen_random_uuid(), d.id, d.attempt_count, d.next_trigger, d.updated_at, w.url,
                       'lease_expired', 'the worker sending this attempt stopped before it recorded the outcome',
                       'lost'
                FROM webhook_deliveries d JOIN lost ON lost.id = d.id AND lost.status = 'processing'
                JOIN webhooks w ON w.id = d.webhook_id
            )
            UPDATE webhook_deliveries d
            SET status = CASE WHEN d.status = 'processing' THEN 'pending' ELSE d.status END,
                lease_expires_at = NULL, next_attempt_at = now() + $2::interval, updated_at = now()
            FROM lost WHERE d.id = lost.id RETURNING d.id
            """,
            grace,
            SWEEP_RECHECK,
            limit,
        )
    return [row["id"] for row in rows]


def delivery_summary(row: Any) -> dict[str, Any]:
    return dict(row)
