"""Calling an integration in the background (app.integrations.calls, tasks.integrations.call_provider):
over the rate limit a call is deferred, never dropped; a failing call is retried under the same
Idempotency-Key. Real PostgreSQL and Redis, local provider servers on 127.0.0.1, a real worker."""

from __future__ import annotations

import email.utils
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest

from app.core import db
from app.core.redis import get_redis
from app.integrations import calls, queries, ratelimit
from app.integrations.calls import enqueue_call
from tests.pipeline import drained, wait_until
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


async def integration_with_provider(factory, receiver, **provider) -> tuple[uuid.UUID, uuid.UUID]:
    org = await factory.org()
    integration = await factory.integration(org.id, "SMS", "sms")
    provider_id = await factory.provider(
        integration, "Twilio", receiver.url, receiver.url, priority=1, credentials="tw-key", **provider
    )
    return integration, provider_id


# --- Without a worker ---------------------------------------------------------------------------------


async def test_a_call_over_the_limit_is_sent_again_for_when_the_next_token_is_due(factory, receiver):
    from tasks.integrations import attempt_call

    # Given a provider allowed two calls an hour, both spent
    integration, provider = await integration_with_provider(factory, receiver, rate_limit_per_hour=2)
    for _ in range(2):
        assert (await ratelimit.take(provider, 2)).taken
    # When a call is attempted
    before = time.time()
    delay_ms = await attempt_call(str(integration), "send", {"to": "+15550100"}, "call-1", 3)
    # Then the provider is not called, and the same call waits in the queue for the next token (30 min)
    assert receiver.log == []
    assert delay_ms is not None and 1_700_000 < delay_ms <= 1_800_000
    [message] = await pending_calls()
    assert list(message.args) == [str(integration), "send", {"to": "+15550100"}, "call-1", 4, str(provider), 0]
    assert message.options["eta"] >= before * 1000 + delay_ms


async def test_a_booked_slot_serves_one_attempt_and_a_failure_takes_a_new_token(factory, receiver):
    from tasks.integrations import attempt_call

    # Given a spent bucket of two an hour, and a call deferred with a slot booked for it
    integration, provider = await integration_with_provider(factory, receiver, rate_limit_per_hour=2)
    for _ in range(2):
        assert (await ratelimit.take(provider, 2)).taken
    receiver.default = Answer(status=503)
    # When its slot comes and the provider fails it
    delay_ms = await attempt_call(str(integration), "send", {}, "call-3", 1, str(provider))
    assert len(receiver.log) == 1 and delay_ms is not None and 4_000 <= delay_ms <= 6_000  # 5 s, jittered
    # Then the next try books no slot, counts the failure, and must take a token of its own
    [retry] = await pending_calls()
    assert list(retry.args)[4:] == [1, None, 1]
    assert await attempt_call(*retry.args) is not None
    assert len(receiver.log) == 1  # none to take: deferred, not sent


async def test_a_call_that_keeps_failing_is_given_up_after_twenty_failures(factory, receiver):
    from tasks.integrations import MAX_FAILURES, CallAbandoned, attempt_call

    integration, _ = await integration_with_provider(factory, receiver)
    receiver.default = Answer(status=500)
    with pytest.raises(CallAbandoned, match=f"failed {MAX_FAILURES + 1} times"):
        await attempt_call(str(integration), "send", {}, "call-4", 0, None, MAX_FAILURES)
    assert await pending_calls() == []


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
    from tasks.integrations import attempt_call

    integration, _provider = await integration_with_provider(factory, receiver)
    receiver.default = Answer(status=429, headers={"Retry-After": "120"})
    for n in range(6):  # more than the breaker's five failures in a row
        assert await attempt_call(str(integration), "send", {}, f"busy-{n}") == 120_000
    [overview] = await queries.overview((await _org_of(integration)), integration)
    assert overview["providers"][0]["circuit"] == "closed"
    messages = await pending_calls()
    assert len(messages) == 6 and all(m.args[5] is None for m in messages)  # nothing booked at our bucket


async def test_a_provider_that_says_429_until_an_http_date_defers_the_call_until_then(factory, receiver):
    from tasks.integrations import attempt_call

    # Given a provider that is busy until a date ten minutes away (RFC 9110 allows a date for seconds)
    integration, _provider = await integration_with_provider(factory, receiver)
    until = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=600), usegmt=True)
    receiver.default = Answer(status=429, headers={"Retry-After": until})
    # When a call is made, directly or by a worker
    with pytest.raises(calls.Deferred) as deferred:
        await calls.call_integration(integration, "send", {})
    delay_ms = await attempt_call(str(integration), "send", {}, "busy-until")
    # Then it is deferred by about that long (the date counts whole seconds), not by the default 30 s
    assert 590 <= deferred.value.retry_after <= 600
    assert delay_ms is not None and 590_000 <= delay_ms <= 600_000


async def test_a_call_the_provider_refuses_is_not_retried(factory, receiver, worker_process):
    integration, _ = await integration_with_provider(factory, receiver)
    receiver.default = Answer(status=422, body=b'{"error": "invalid phone number"}')
    await enqueue_call(integration, "send", {"to": "not a number"}, call_id="bad-1")
    await receiver.wait_for(1, timeout=20)
    await wait_until(all_done, timeout=10)
    # Nothing else arrives: the worker gave it up at once (Dramatiq's dead-letter set keeps it); a retry
    # would be a delayed message, which the join waits for.
    await drained("integrations", delayed=True)
    assert len(receiver.log) == 1
    assert await get_redis().zcard("intime:integrations.XQ") == 1  # type: ignore[misc]


async def _org_of(integration_id):
    async with db.connection() as conn:
        return await conn.fetchval("SELECT org_id FROM integrations WHERE id = $1", integration_id)


async def test_a_call_to_a_deleted_integration_is_dropped_not_retried(factory, receiver):
    from tasks.integrations import attempt_call

    assert await attempt_call(str(uuid.uuid4()), "send", {"to": "+15550100"}, "call-2") is None
    assert await pending_calls() == []


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
