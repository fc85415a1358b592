"""The delivery engine: claim, send, record.

The state machine and every statement that moves a delivery along it: statements.py; how a delivery
gets into a message: dispatch.py. This module decides when each runs: a claim of what the message
carries, one send per claimed delivery, then the outcome, recorded fenced by the attempt number the
claim returned, and the delivery's slot freed for the next.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from app import __version__
from app.core import db, guard, outbound, times
from app.webhooks import dispatch, dlq, schedule, secrets, signing, statements, stats
from app.webhooks.payloads import build_body
from app.webhooks.tables import DlqReason

log = logging.getLogger("intime.delivery")
USER_AGENT = f"InTime-Webhooks/{__version__}"
RESPONSE_BODY_CAP = 64 * 1024
# A claim holds the delivery for the webhook's timeout plus this margin. If the worker dies mid-send,
# the lease runs out and the sweep records the attempt as lost and schedules the next one. The send is
# bounded by the timeout (plus 1 s), so the margin only has to cover recording the outcome; were it
# ever too short, the cost is one duplicate with the same webhook-id, and the fenced writes keep the
# state right. Shorter means a dead worker's deliveries are retried sooner.
LEASE_MARGIN_SECONDS = 15


def _clean(text: str | None) -> str | None:
    """PostgreSQL text and jsonb cannot hold NUL; a receiver's answer may."""
    return text.replace("\x00", "\ufffd") if text else text


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
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_seconds + 1):
            answer = await outbound.post(url, body, headers, timeout_seconds, RESPONSE_BODY_CAP)
        return Sent(
            answer.status,
            {k: _clean(v) or "" for k, v in answer.headers.items()},
            _clean(answer.body.decode("utf-8", "replace")),
            answer.truncated,
            None,
            None,
            _ms(started),
        )
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, guard.OutboundRefused) as error:
        return Sent(
            None,
            None,
            None,
            False,
            outbound.classify_error(error),
            _clean(str(error)) or type(error).__name__,
            _ms(started),
        )


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _outcome(status: int | None) -> str:
    if status is not None and 200 <= status < 300:
        return "success"
    if status == 410:
        return "gone"
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return "non_retryable"
    return "failed"  # no answer, 3xx (redirects are not followed), 408, 429, 5xx


# A message's sends still running after this long go on without it: they record themselves and the
# worker thread takes its next message, so a receiver hanging to its timeout holds no worker thread
# (with a 4-thread worker, four such receivers used to stop every other organisation's deliveries).
# It bounds fairness: a message ahead of another organisation's holds a thread at most this long, so
# with 1 s, three webhooks of one tenant timing out at 1 s (30 messages at the default cap) kept a
# 4-thread worker's queue 3 s behind; a healthy receiver answers well within 0.1 s (bench p99 64 ms).
DETACH_AFTER_S = 0.1
# Sends a process lets run on their own at most; beyond, a message waits for its sends (backpressure).
MAX_DETACHED = 1000
_detached: set[asyncio.Task[None]] = set()
Attempted = tuple[Any, Sent, dict[str, str], datetime]  # the claimed row, its answer, headers shown, start


async def deliver_many(
    delivery_ids: list[str], message_id: str | None, webhook_id: str | None = None
) -> list[schedule.RetryRequest]:
    """One attempt of each delivery this message carries (dispatch.py wrote `message_id` on their rows):
    claimed together, sent concurrently, and each outcome recorded as soon as its own send is done
    (sends that finish together are recorded in one statement), its slot freed and the webhook's next
    held delivery dispatched. Recording per completion keeps one receiver that hangs to its timeout
    from holding the outcomes of the others past their leases, where the sweep would call them lost.
    Returns the schedule.RetryRequests of the sends done within DETACH_AFTER_S, for the backoff middleware;
    the rest decide their retries themselves when they finish."""
    keys = [uuid.UUID(str(i)) for i in delivery_ids]
    if message_id is None:
        return []  # a message of an older version: what it carried is held and dispatched again
    async with db.connection() as conn:
        rows = await conn.fetch(statements.CLAIM, keys, LEASE_MARGIN_SECONDS, uuid.UUID(message_id))
        ready, dead = [], []
        for row in rows:
            if row["erased_at"] is not None:
                # Erased while this delivery was being sent, and now retried: nothing is left to send.
                # Straight to the DLQ like erase.py's waiting ones: not announced, not counted.
                await conn.execute(
                    statements.TO_DLQ, row["id"], DlqReason.payload_erased.value, 1, row["attempt_count"]
                )
                dead.append(row["id"])
            elif (row["deleted_at"] is not None or not row["enabled"]) and row["next_trigger"] != "test":
                reason = DlqReason.webhook_deleted if row["deleted_at"] is not None else DlqReason.webhook_disabled
                async with conn.transaction():
                    await dlq.to_dlq(conn, row, reason, fence=row["attempt_count"], undo_attempt=True)
                dead.append(row["id"])
            else:
                ready.append(row)
    await dispatch.renew(
        (row["webhook_id"], message_id, row["id"], row["timeout_seconds"] + LEASE_MARGIN_SECONDS) for row in ready
    )
    claimed = {row["id"] for row in ready}
    if webhook_id is not None and len(claimed) < len(keys):  # not claimed (stale) or dead-lettered
        hook = uuid.UUID(webhook_id)
        await dispatch.release_and_hand_on((hook, message_id, key) for key in keys if key not in claimed)
    loop = asyncio.get_running_loop()
    retries: list[schedule.RetryRequest] = []
    opened: dict[tuple, tuple[list[str], dict[str, str]]] = {}  # the message's webhook's secrets, opened once
    pending = {asyncio.create_task(_attempt(row, opened)) for row in ready}
    deadline = loop.time() + DETACH_AFTER_S
    try:
        while pending:
            left, detachable = deadline - loop.time(), len(_detached) < MAX_DETACHED
            if left <= 0 and detachable:
                break
            finished, pending = await asyncio.wait(
                pending, timeout=left if detachable else None, return_when=asyncio.FIRST_COMPLETED
            )
            if finished:
                retries.extend(await _record(finished, message_id))
    except BaseException:
        for task in pending:  # recording failed: these sends are abandoned, and the sweep finds them
            task.cancel()
        raise
    if pending:
        rest = asyncio.create_task(_finish_on_its_own(pending, message_id))
        _detached.add(rest)
        rest.add_done_callback(_detached.discard)
    return retries


async def _finish_on_its_own(pending: set[asyncio.Task[Attempted]], message_id: str) -> None:
    """The sends a message left running: each recorded when done, then their retries decided (the
    same decision the backoff middleware makes for the others)."""
    retries: list[schedule.RetryRequest] = []
    try:
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            retries.extend(await _record(finished, message_id))
    except Exception:
        log.exception("recording detached sends failed; the sweep takes them over when their leases run out")
        for task in pending:
            task.cancel()
    if retries:
        await schedule.decide_all(retries)


async def wait_detached(seconds: float) -> None:
    """At shutdown: let the sends running on their own finish and record (the pool closes after)."""
    if _detached:
        await asyncio.wait(set(_detached), timeout=seconds)


async def _record(finished: set[asyncio.Task[Attempted]], message_id: str) -> list[schedule.RetryRequest]:
    done = [task.result() for task in finished]
    successes = [item for item in done if _outcome(item[1].status) == "success"]
    if successes:
        await record_successes(successes)
    retries = []
    for row, sent, shown, at in done:
        if _outcome(sent.status) != "success":
            retry_request = await record_failure(row, sent, shown, at)
            if retry_request is not None:
                retries.append(retry_request)
    await dispatch.release_and_hand_on((row["webhook_id"], message_id, row["id"]) for row, *_ in done)
    return retries


def _open(row, now: datetime, opened: dict[tuple, tuple[list[str], dict[str, str]]]):
    """The webhook's signing secrets and custom headers, opened once for all the deliveries of a message
    (they share a webhook, so the keyring's work would be the same each time)."""
    key = (row["webhook_id"], row["secret"], row["previous_secret"], row["previous_secret_expires_at"], row["headers"])
    if key not in opened:
        opened[key] = (
            secrets.live_secrets(
                row["webhook_id"], row["secret"], row["previous_secret"], row["previous_secret_expires_at"], now
            ),
            secrets.open_headers(row["webhook_id"], row["headers"]),
        )
    return opened[key]


async def _attempt(row, opened: dict[tuple, tuple[list[str], dict[str, str]]]) -> Attempted:
    """Build, sign and send one request; never raises (a failure is an attempt too)."""
    now = datetime.now(UTC)
    request_headers: dict[str, str] = {}
    custom: dict[str, str] = {}
    try:
        body = build_body(row)
        signing_secrets, custom = _open(row, now, opened)
        request_headers = {
            **custom,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signing.signature_headers(str(row["id"]), row["event_type"], body, signing_secrets, now),
        }
        sent = await send(row["url"], body, request_headers, row["timeout_seconds"])
    except Exception as error:  # our bug or bad stored data: record it and let the policy decide
        log.exception("delivery %s failed before an answer", row["id"])
        sent = Sent(None, None, None, False, "internal", f"{type(error).__name__}: {error}", 0)
    shown = {
        name: secrets.mask_value(name, value) if name in custom else value for name, value in request_headers.items()
    }
    return row, sent, shown, now


async def record_successes(items: list) -> None:
    """Record successful attempts, one or many, in one statement: the only way a delivery reaches
    success, so a single send and a batch are recorded alike."""
    columns: list[list] = [[] for _ in range(12)]
    for row, sent, shown, at in items:
        values = (
            uuid.uuid4(),
            row["id"],
            row["attempt_count"],
            row["next_trigger"],
            at,
            sent.duration_ms,
            row["url"],
            json.dumps(shown),
            sent.status,
            json.dumps(sent.headers or {}),
            sent.body,
            sent.truncated,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        stats.record_attempt(
            row["webhook_id"], at, success=True, first=row["attempt_count"] == 1, duration_ms=sent.duration_ms
        )
    # A success resets its webhook's count of failed deliveries in a row; a test send's does not.
    webhooks = list({row["webhook_id"] for row, *_ in items if row["event_type"] != dlq.TEST_EVENT})
    async with db.connection() as conn:
        await conn.execute(statements.RECORD_SUCCESSES, *columns, webhooks)


async def record_failure(
    row, sent: Sent, shown_headers: dict[str, str], started_at: datetime
) -> schedule.RetryRequest | None:
    """Store a failed attempt and its outcome atomically; hand retryable failures to the middleware.
    (Successes, also a single one, are recorded by record_successes.)"""
    status, outcome, fence = sent.status, _outcome(sent.status), row["attempt_count"]
    attempt_id = uuid.uuid4()
    values = (
        attempt_id,
        row["id"],
        fence,
        row["next_trigger"],
        started_at,
        sent.duration_ms,
        row["url"],
        json.dumps(shown_headers),
        status,
        json.dumps(sent.headers) if sent.headers is not None else None,
        sent.body,
        sent.truncated,
        sent.error_class,
        sent.error_message,
        outcome,
    )
    stats.record_attempt(
        row["webhook_id"],
        started_at,
        success=False,
        first=fence == 1,
        duration_ms=sent.duration_ms if status is not None else None,
    )
    async with db.connection() as conn, conn.transaction():
        await conn.execute(statements.INSERT_ATTEMPT, *values)
        last_error = sent.error_message if status is None else f"HTTP {status}"
        still_ours = await conn.fetchval(statements.NOTE_FAILED_ANSWER, row["id"], fence, status, last_error)
        if outcome == "gone":
            await dlq.disable_in_transaction(conn, row["org_id"], row["webhook_id"], "the endpoint answered 410 Gone")
        if still_ours is None:
            return None  # the sweep took it over meanwhile and has decided what comes next
        if outcome in ("gone", "non_retryable"):
            reason = DlqReason.gone if outcome == "gone" else DlqReason.non_retryable
            await dlq.to_dlq(conn, row, reason, fence=fence, answer=status)
            return None
    wait = times.parse_retry_after((sent.headers or {}).get("retry-after"), datetime.now(UTC))
    return schedule.RetryRequest(str(row["id"]), fence, str(attempt_id), None if wait is None else int(wait * 1000))
