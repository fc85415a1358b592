"""Calling an integration in the background (app.integrations.calls, app.integrations.background,
tasks.integrations.call_provider): over the rate limit a call is deferred, never dropped; a failing call
is retried under the same Idempotency-Key; its row (integration_calls) records every step. Real
PostgreSQL and Redis, local provider servers on 127.0.0.1, a real worker."""

from __future__ import annotations

import email.utils
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest

from app.core import db
from app.core.problems import NotFound
from app.core.redis import get_redis
from app.integrations import calls, queries, ratelimit
from app.integrations.background import attempt_call
from app.integrations.calls import enqueue_call
from tests.pipeline import drained, paused, wait_until
from tests.receiver import Answer


async def pending_calls() -> list[dramatiq.Message]:
    """The call_provider messages the broker holds, due or delayed; a message leaves only when a worker
    acknowledges it, after any deferral or retry of it has been sent."""
    messages = []
    for key in ("intime:integrations.msgs", "intime:integrations.DQ.msgs"):
        for raw in await get_redis().hvals(key):  # type: ignore[misc]
            message = dramatiq.Message.decode(str(raw).encode())  # the client decodes replies to str
            if message.actor_name == "call_provider":
                messages.append(message)
    return messages


async def all_done() -> bool:
    return not await pending_calls()


async def recorded(integration: uuid.UUID, call_id: str, payload: dict | None = None, **counts) -> uuid.UUID:
    """A call's row, due now, with no message for it (as if a worker had just taken its message)."""
    row_id, _, new = await calls.record_call(integration, "send", payload or {}, call_id=call_id, **counts)
    assert new
    return row_id


async def call_row(row_id: uuid.UUID) -> dict:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT *, extract(epoch FROM next_attempt_at - now())::float8 AS due_in "
            "FROM integration_calls WHERE id = $1",
            row_id,
        )
    assert row is not None
    return dict(row)


async def rows_of(integration: uuid.UUID) -> dict[str, dict]:
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT * FROM integration_calls WHERE integration_id = $1", integration)
    return {row["call_id"]: dict(row) for row in rows}


async def integration_with_provider(factory, receiver, **provider) -> tuple[uuid.UUID, uuid.UUID]:
    org = await factory.org()
    integration = await factory.integration(org.id, "SMS", "sms")
    provider_id = await factory.provider(
        integration, "Twilio", receiver.url, receiver.url, priority=1, credentials="tw-key", **provider
    )
    return integration, provider_id


# --- Without a worker ---------------------------------------------------------------------------------


async def test_a_call_over_the_limit_is_sent_again_for_when_the_next_token_is_due(factory, receiver):
    # Given a provider allowed two calls an hour, both spent
    integration, provider = await integration_with_provider(factory, receiver, rate_limit_per_hour=2)
    for _ in range(2):
        assert (await ratelimit.take(provider, 2)).taken
    # When a call deferred three times already is attempted
    row_id = await recorded(integration, "call-1", {"to": "+15550100"}, deferrals=3)
    before = time.time()
    delay_ms = await attempt_call(row_id)
    # Then the provider is not called, and the same call waits for the next token (30 min): its row says
    # so (by PostgreSQL's clock), with the slot booked at the provider, and a message of its id waits
    assert receiver.log == []
    assert delay_ms is not None and 1_700_000 < delay_ms <= 1_800_000
    row = await call_row(row_id)
    assert (row["status"], row["deferrals"], row["failures"], row["reserved_for"]) == ("deferred", 4, 0, provider)
    assert abs(row["due_in"] - delay_ms / 1000) < 5
    [message] = await pending_calls()
    assert list(message.args) == [str(row_id)]
    assert message.options["eta"] >= before * 1000 + delay_ms


async def test_a_booked_slot_serves_one_attempt_and_a_failure_takes_a_new_token(factory, receiver):
    # Given a spent bucket of two an hour, and a call deferred with a slot booked for it
    integration, provider = await integration_with_provider(factory, receiver, rate_limit_per_hour=2)
    for _ in range(2):
        assert (await ratelimit.take(provider, 2)).taken
    receiver.default = Answer(status=503)
    row_id = await recorded(integration, "call-3", deferrals=1, reserved_for=provider)
    # When its slot comes and the provider fails it
    delay_ms = await attempt_call(row_id)
    assert len(receiver.log) == 1 and delay_ms is not None and 4_000 <= delay_ms <= 6_000  # 5 s, jittered
    # Then the next try books no slot, counts the failure, and must take a token of its own
    row = await call_row(row_id)
    assert (row["status"], row["deferrals"], row["failures"], row["reserved_for"]) == ("failed", 1, 1, None)
    assert "HTTP 503" in row["last_error"]
    [retry] = await pending_calls()
    assert list(retry.args) == [str(row_id)]
    async with db.connection() as conn:  # its backoff has passed
        await conn.execute("UPDATE integration_calls SET next_attempt_at = now() WHERE id = $1", row_id)
    assert await attempt_call(*retry.args) is not None
    assert len(receiver.log) == 1  # none to take: deferred, not sent
    assert (await call_row(row_id))["status"] == "deferred"


async def test_a_call_that_keeps_failing_is_given_up_after_twenty_failures_and_keeps_its_row(factory, receiver):
    from app.integrations.call_rows import MAX_FAILURES

    integration, _ = await integration_with_provider(factory, receiver)
    receiver.default = Answer(status=500)
    row_id = await recorded(integration, "call-4", failures=MAX_FAILURES)
    assert await attempt_call(row_id) is None
    assert await pending_calls() == []
    row = await call_row(row_id)
    assert row["status"] == "abandoned" and row["completed_at"] is not None
    assert row["last_error"] == f"failed {MAX_FAILURES + 1} times; last: Twilio answered HTTP 500"


async def test_a_provider_that_no_longer_accepts_our_credentials_counts_against_it(factory, receiver):
    integration, _provider = await integration_with_provider(factory, receiver)
    receiver.default = Answer(status=401)
    with pytest.raises(calls.CallFailed, match="did not accept our credentials") as failed:
        await calls.call_integration(integration, "send", {})
    assert not isinstance(failed.value, calls.Rejected)  # tried again later, not given up
    [overview] = await queries.overview(await _org_of(integration), integration)
    assert overview["providers"][0]["circuit"] == "closed"  # one failure of five
    for _ in range(4):
        with pytest.raises(calls.CallFailed):
            await calls.call_integration(integration, "send", {})
    [overview] = await queries.overview(await _org_of(integration), integration)
    assert overview["providers"][0]["circuit"] == "open"


async def test_calls_over_the_limit_book_slots_one_token_apart():
    # Given a bucket of 3600 an hour (one token a second), spent at T0
    provider, t0 = uuid.uuid4(), 1_800_000_000.0
    while (await ratelimit.take(provider, 3600, now=t0)).taken:
        pass
    # When three calls book slots at the same moment, each gets its own, a second apart
    waits = [(await ratelimit.take(provider, 3600, reserve=True, now=t0)).wait_seconds for _ in range(3)]
    assert [round(w, 6) for w in waits] == [1.0, 2.0, 3.0]
    # and the page counts the booked ones as used
    assert await ratelimit.used_this_hour(provider, 3600, now=t0) == 3603


async def test_a_provider_that_says_429_defers_the_call_as_long_as_it_asks_without_harming_its_health(
    factory, receiver
):
    integration, _provider = await integration_with_provider(factory, receiver)
    receiver.default = Answer(status=429, headers={"Retry-After": "120"})
    for n in range(6):  # more than the breaker's five failures in a row
        assert await attempt_call(await recorded(integration, f"busy-{n}")) == 120_000
    [overview] = await queries.overview((await _org_of(integration)), integration)
    assert overview["providers"][0]["circuit"] == "closed"
    assert len(await pending_calls()) == 6
    rows = (await rows_of(integration)).values()
    assert {(row["status"], row["deferrals"], row["reserved_for"]) for row in rows} == {("deferred", 1, None)}


async def test_a_provider_that_says_429_until_an_http_date_defers_the_call_until_then(factory, receiver):
    # Given a provider that is busy until a date ten minutes away (RFC 9110 allows a date for seconds)
    integration, _provider = await integration_with_provider(factory, receiver)
    until = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=600), usegmt=True)
    receiver.default = Answer(status=429, headers={"Retry-After": until})
    # When a call is made, directly or by a worker
    with pytest.raises(calls.Deferred) as deferred:
        await calls.call_integration(integration, "send", {})
    delay_ms = await attempt_call(await recorded(integration, "busy-until"))
    # Then it is deferred by about that long (the date counts whole seconds), not by the default 30 s
    assert 590 <= deferred.value.retry_after <= 600
    assert delay_ms is not None and 590_000 <= delay_ms <= 600_000


async def test_a_call_the_provider_refuses_is_not_retried_and_its_row_keeps_the_reason(
    factory, receiver, worker_process
):
    integration, _ = await integration_with_provider(factory, receiver)
    receiver.default = Answer(status=422, body=b'{"error": "invalid phone number"}')
    await enqueue_call(integration, "send", {"to": "not a number"}, call_id="bad-1")
    await receiver.wait_for(1, timeout=20)
    await wait_until(all_done, timeout=10)
    # Nothing else arrives: the worker gave it up at once; a retry would be a delayed message, which the
    # join waits for.
    await drained("integrations", delayed=True)
    assert len(receiver.log) == 1
    row = (await rows_of(integration))["bad-1"]
    assert (row["status"], row["status_code"], row["attempts"]) == ("rejected", 422, 1)
    assert row["last_error"] == 'Twilio refused the call: HTTP 422: {"error": "invalid phone number"}'
    assert await get_redis().zcard("intime:integrations.XQ") == 0  # type: ignore[misc]  # the row is the record


async def _org_of(integration_id):
    async with db.connection() as conn:
        return await conn.fetchval("SELECT org_id FROM integrations WHERE id = $1", integration_id)


async def test_a_call_to_a_missing_integration_is_refused_and_a_deleted_ones_is_dropped(factory, receiver):
    with pytest.raises(NotFound):
        await enqueue_call(uuid.uuid4(), "send", {"to": "+15550100"}, call_id="call-2")
    # A message whose call went with its integration (the rows cascade) finds nothing to do.
    integration, _ = await integration_with_provider(factory, receiver)
    row_id = await recorded(integration, "call-2")
    async with db.connection() as conn:
        await conn.execute("DELETE FROM integrations WHERE id = $1", integration)
    assert await attempt_call(row_id) is None
    assert await pending_calls() == [] and receiver.log == []


async def test_the_same_call_id_enqueued_twice_for_an_integration_is_one_call(factory, receiver, worker_process):
    integration, _ = await integration_with_provider(factory, receiver)
    other = await factory.integration(await _org_of(integration), "Email", "email")
    with paused(worker_process):  # what is enqueued stays queued while this looks
        assert await enqueue_call(integration, "send", {"n": 1}, call_id="order-7") == "order-7"
        assert await enqueue_call(integration, "send", {"n": 2}, call_id="order-7") == "order-7"
        await enqueue_call(other, "send", {"n": 3}, call_id="order-7")  # another integration's call of that id
        assert len(await pending_calls()) == 2
        [row] = (await rows_of(integration)).values()
    assert (row["status"], json.loads(row["payload"])) == ("queued", {"n": 1})


async def test_an_operation_that_is_not_a_plain_name_is_refused_before_it_is_enqueued(factory, receiver):
    integration, _ = await integration_with_provider(factory, receiver)
    with pytest.raises(ValueError, match="not a plain name"):
        await enqueue_call(integration, "send/../admin", {"to": "+15550100"})
    assert await pending_calls() == []


# --- With a worker ------------------------------------------------------------------------------------


async def test_a_burst_over_the_rate_limit_arrives_whole_once_each_and_no_faster_than_the_limit(
    factory, receiver, worker_process
):
    # Given a provider allowed 3600 calls an hour whose bucket is spent: one call a second from now on
    integration, provider = await integration_with_provider(factory, receiver, rate_limit_per_hour=3600)
    while (await ratelimit.take(provider, 3600)).taken:
        pass
    drained_at = time.time()
    # When a burst of calls is enqueued: the worker's four threads take four at once, of which at most
    # three can get a token within the two seconds a call waits, so some are deferred
    call_ids = [await enqueue_call(integration, "send", {"n": n}) for n in range(6)]
    # Then every call arrives, one token apart, and once each (nothing is left to arrive later)
    arrived = await receiver.wait_for(6, timeout=30)
    await wait_until(all_done, timeout=10)
    assert len(receiver.log) == 6
    keys = [request.headers["idempotency-key"] for request in arrived]
    assert sorted(keys) == sorted(call_ids)
    assert {key: json.loads(r.body)["n"] for key, r in zip(keys, arrived, strict=True)} == {
        call_id: n for n, call_id in enumerate(call_ids)
    }
    # The k-th token after the drain is due no earlier than k seconds after it (0.25 s for clock reads).
    times = sorted(request.at for request in arrived)
    assert all(at >= drained_at + k - 0.25 for k, at in enumerate(times)), [t - drained_at for t in times]
    assert {row["status"] for row in (await rows_of(integration)).values()} == {"succeeded"}


async def test_a_call_the_provider_fails_is_retried_by_the_worker_under_the_same_idempotency_key(
    factory, receiver, worker_process
):
    # Given a provider that answers 503 once, then 200
    integration, _ = await integration_with_provider(factory, receiver)
    receiver.then(Answer(status=503))
    # When a call is enqueued with the caller's own id
    call_id = await enqueue_call(integration, "send", {"to": "+15550100"}, call_id="order-42")
    # Then the worker retries it after its backoff (5 to 10 s) and it arrives, under the same key
    arrived = await receiver.wait_for(2, timeout=30)
    await wait_until(all_done, timeout=10)
    assert call_id == "order-42" and len(receiver.log) == 2
    attempts = [(r.method, r.path, r.headers["idempotency-key"]) for r in arrived]
    assert attempts == [("POST", "/hook/send", "order-42")] * 2
    assert [json.loads(r.body) for r in arrived] == [{"to": "+15550100"}] * 2
    assert {r.headers["authorization"] for r in arrived} == {"Bearer tw-key"}
    row = (await rows_of(integration))["order-42"]
    assert (row["status"], row["attempts"], row["failures"]) == ("succeeded", 2, 1)
    assert (row["provider_name"], row["status_code"], row["last_error"]) == ("Twilio", 200, None)
