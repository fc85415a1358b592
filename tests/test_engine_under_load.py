"""The delivery engine under ordinary production load (issue 13): what one slow tenant must not do to
the others. In-process: the engine's functions are called directly, against real PostgreSQL and real
receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import uuid

import asyncpg
import dramatiq
import pytest
from argon2 import PasswordHasher

from app.core import db, queue
from app.core.redis import get_redis
from app.webhooks import delivery, dispatch, dlq, fanout, schedule, statements
from tests.pipeline import deliver_now, hand_over, wait_until
from tests.receiver import Answer, Receiver


async def _deliveries_of(event_id: str) -> dict[str, uuid.UUID]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT id, webhook_id FROM webhook_deliveries WHERE event_id = $1", uuid.UUID(event_id)
        )
    return {str(row["webhook_id"]): row["id"] for row in rows}


async def _status(delivery_id: uuid.UUID) -> str:
    async with db.connection() as conn:
        return await conn.fetchval("SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id)


async def _attempts(delivery_id: uuid.UUID) -> list[tuple[int, str]]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT attempt_number, outcome FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number",
            delivery_id,
        )
    return [(row["attempt_number"], row["outcome"]) for row in rows]


async def test_a_receiver_hanging_to_its_timeout_does_not_hold_back_another_webhooks_outcome(api, receiver):
    # Given a 1 s-timeout webhook whose receiver answers at once, and a 30 s-timeout webhook whose
    # receiver hangs past its timeout, with one delivery each in the same batch
    hanging = await Receiver().start()
    hanging.default = Answer(delay=33)
    try:
        fast = await api.webhook(receiver.url, timeout_seconds=1)
        slow = await api.webhook(hanging.url, timeout_seconds=30)
        event_id = await api.publish()
        await fanout.fan_out_backlog()
        ids = await _deliveries_of(event_id)
        fast_id, slow_id = ids[fast["id"]], ids[slow["id"]]

        # When the batch is sent
        batch = asyncio.create_task(
            delivery.deliver_many([str(fast_id), str(slow_id)], await hand_over(fast_id, slow_id))
        )

        # Then the fast delivery is recorded as soon as its own send is done, while the other still
        # hangs: its lease (1 s + margin) cannot run out behind the slow one's 30 s; and the message is
        # done with after a second, its worker thread free, while the hanging send goes on by itself
        async def fast_recorded() -> bool:
            return await _status(fast_id) == "success"

        await wait_until(fast_recorded, timeout=10)
        assert len(hanging.log) == 1 and await _status(slow_id) == "processing"
        await asyncio.wait_for(batch, timeout=5)
        swept = await schedule.sweep()
        assert swept.lost_messages == swept.expired_leases == []  # nothing lost, nothing to send again

        async def slow_recorded() -> bool:
            return await _status(slow_id) == "failed"

        await wait_until(slow_recorded, timeout=40)
        # Each receiver got exactly one request, and each delivery has one true attempt: no `lost`
        assert len(receiver.log) == 1 and len(hanging.log) == 1
        assert await _attempts(fast_id) == [(1, "success")]
        assert await _attempts(slow_id) == [(1, "failed")]
    finally:
        await hanging.stop()


async def test_api_requests_keep_answering_while_50_sign_ins_are_checked(client, factory, monkeypatch):
    from app.accounts import services as accounts

    # Given an admin, an API token of the same organisation, and a note of the thread each password
    # check runs on (the real argon2 check runs; only its thread is written down)
    admin = await factory.user()
    _, token = await factory.token(admin.org, scopes="webhooks:read")
    loop_thread, checked_on = threading.get_ident(), []

    class NotingHasher(PasswordHasher):
        def verify(self, hash, password):
            checked_on.append(threading.get_ident())
            return super().verify(hash, password)

    monkeypatch.setattr(accounts, "_hasher", NotingHasher())
    await client.get("/login")
    form = {"email": admin.user.email, "password": admin.password, "_csrf_token": client.cookies.get("intime_csrf")}
    finished: list[int] = []

    async def sign_in(n: int) -> None:
        answer = await client.post("/login", data=form, follow_redirects=False)
        assert answer.status_code in (302, 303), answer.text
        finished.append(n)

    # When 50 sign-ins are being checked (argon2: tens of ms of CPU and 64 MiB each) and API calls come in
    signing_in = [asyncio.create_task(sign_in(n)) for n in range(50)]
    answers = []
    while len(finished) < 50 and len(answers) < 200:
        answers.append((await client.get("/api/v1/webhooks", headers={"authorization": f"Bearer {token}"})).status_code)
    await asyncio.gather(*signing_in)

    # Then every check ran off the event loop, which stayed free: the API kept answering meanwhile
    assert len(checked_on) == 50 and loop_thread not in checked_on
    assert answers and set(answers) == {200}


async def _one_failed_delivery(api, receiver) -> tuple[uuid.UUID, list[schedule.RetryRequest]]:
    receiver.default = Answer(status=503)
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    await fanout.fan_out_backlog()
    delivery_id = (await _deliveries_of(event_id))[hook["id"]]
    return delivery_id, await deliver_now(delivery_id)


async def test_a_retry_decision_that_never_ran_is_taken_by_the_sweep_and_the_history_stays_true(api, receiver):
    # Given a failed attempt that is recorded, but whose retry decision never ran (the decision failed,
    # or the worker stopped between the two), and whose lease has then run out
    delivery_id, retries = await _one_failed_delivery(api, receiver)
    assert len(retries) == 1
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET lease_expires_at = now() - interval '1 second' WHERE id = $1", delivery_id
        )

    # When the sweep comes by
    swept = await schedule.sweep()

    # Then it decides on the recorded attempt (a retry), and writes no `lost` attempt over it
    assert swept.expired_leases == [delivery_id]
    assert await _attempts(delivery_id) == [(1, "failed")]
    assert await _status(delivery_id) == "failed"


async def test_one_failing_retry_decision_does_not_strand_the_others_of_its_batch(api, receiver):
    delivery_id, retries = await _one_failed_delivery(api, receiver)
    unreadable = schedule.RetryRequest("not-a-delivery-id", 1, str(uuid.uuid4()), None)

    scheduled = await schedule.decide_all([unreadable, *retries])

    assert scheduled == 1
    assert await _status(delivery_id) == "failed"


async def test_disabling_a_webhook_with_many_waiting_answers_at_once_and_drains_them_in_bounded_batches(api):
    # Given a webhook with 250 deliveries waiting for it, and a test send meanwhile
    hook = await api.webhook("http://127.0.0.1:9/never-called")
    async with db.connection() as conn:
        await conn.execute(
            "SELECT publish_event('job.created', NULL, '{}'::jsonb, NULL, '{}'::jsonb, $1) "
            "FROM generate_series(1, 250)",
            api.organisation.id,
        )
    await fanout.fan_out_backlog()

    # When an admin disables it
    patched = await api.patch(f"/webhooks/{hook['id']}", {"enabled": False})

    # Then the request moved nothing itself and announced the count once; the drain takes bounded
    # batches, each its own short transaction, and publishes no event per delivery
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    async with db.connection() as conn:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'pending'",
            uuid.UUID(hook["id"]),
        )
        disabled = await conn.fetchval(
            "SELECT payload->>'dead_lettered' FROM events WHERE event_type = 'webhook.disabled' AND org_id = $1",
            api.organisation.id,
        )
    assert waiting == 250 and disabled == "250"
    assert [await dlq.drain_stopped(batch=100) for _ in range(4)] == [100, 100, 50, 0]
    async with db.connection() as conn:
        moved = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'dlq' "
            "AND dlq_reason = 'webhook_disabled'",
            uuid.UUID(hook["id"]),
        )
        per_delivery = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'webhook.delivery.dead_lettered' AND org_id = $1",
            api.organisation.id,
        )
    assert moved == 250 and per_delivery == 0


async def test_the_sweep_sends_again_exactly_the_deliveries_whose_message_is_gone(api):
    # Given three deliveries handed to the queue a minute ago and not yet taken by a worker: one whose
    # message waits in Redis (a long queue ahead of it), one whose message Dramatiq is retrying after an
    # unexpected error (delayed), one whose message Redis lost
    hook = await api.webhook("http://127.0.0.1:9/never-called")
    for n in range(3):
        await api.publish(payload={"n": n})
    _, (waiting_id, retried_id, lost_id) = await fanout.fan_out_backlog()
    waiting_message, retried_message = await hand_over(waiting_id), await hand_over(retried_id)
    await hand_over(lost_id)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET requeued_at = now() - interval '1 minute' WHERE webhook_id = $1",
            uuid.UUID(hook["id"]),
        )
    await queue.asend_batches([(waiting_message, hook["id"], [str(waiting_id)])])  # as dispatch sends it
    retried = dramatiq.Message(
        queue_name="deliveries",
        actor_name="deliver_batch",
        args=([str(retried_id)], retried_message, hook["id"]),
        kwargs={},
        options={"retries": 2},
        message_id=retried_message,
    )
    queue.broker().enqueue(retried, delay=60_000)  # as Dramatiq's Retries middleware puts it back

    # When the sweep comes by (whatever the queue's length)
    swept = await schedule.sweep()

    # Then only the lost one is held again, for dispatch to send in a new message; the others keep
    # their messages, which will carry them, and are not sent twice
    assert swept.lost_messages == [lost_id] and swept.expired_leases == []
    async with db.connection() as conn:
        messages = dict(
            await conn.fetch(
                "SELECT id, message_id::text FROM webhook_deliveries WHERE id = ANY($1)",
                [waiting_id, retried_id, lost_id],
            )
        )
    assert messages == {waiting_id: waiting_message, retried_id: retried_message, lost_id: None}
    assert (await schedule.sweep()).lost_messages == []


async def test_a_hand_over_that_does_not_commit_leaves_the_webhooks_slots_free(api, monkeypatch):
    # Given a webhook capped at 3 with 3 deliveries due, and a database that fails the hand-over
    # (as when PostgreSQL restarts between dispatch taking the slots and recording the messages)
    hook = await api.webhook("http://127.0.0.1:9/never-called", max_in_flight=3)
    for n in range(3):
        await api.publish(payload={"n": n})
    await fanout.fan_out_backlog()
    monkeypatch.setattr(statements, "HAND_OVER", "SELECT 1 / 0 WHERE $1::uuid[] IS NOT NULL AND $2::uuid[] IS NOT NULL")

    # When dispatch runs and fails
    with pytest.raises(asyncpg.DivisionByZeroError):
        await dispatch.dispatch([uuid.UUID(hook["id"])])

    # Then no slot stays taken, and once the database answers again all 3 go out at once, not after
    # the slots' queue allowance (3 minutes) runs out
    assert await get_redis().zcard(dispatch.slots_key(hook["id"])) == 0
    monkeypatch.undo()
    done = await dispatch.dispatch([uuid.UUID(hook["id"])])
    assert done.handed == 3
