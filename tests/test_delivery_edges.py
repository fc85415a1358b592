"""The edges of the delivery engine: stray messages, lost attempts, odd answers, late workers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.core import db
from app.core.times import parse_retry_after
from app.webhooks import delivery, schedule, statements
from app.webhooks.delivery import Sent
from tests.pipeline import FAST, drained, hand_over, settled, wait_until
from tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")


async def test_a_stray_message_never_sends_before_the_scheduled_retry(api, receiver):
    receiver.default = Answer(status=503)
    slow = FAST | {"base_delay_ms": 60_000, "max_delay_ms": 60_000}
    hook = await api.webhook(receiver.url, retry_policy=slow)
    event_id = await api.publish()
    row = await settled(event_id, hook["id"], "failed")
    # A leftover message for the same delivery (one that carried its first attempt) arrives now
    assert row["message_id"] is None  # held for its retry: no message may claim it
    assert await delivery.deliver_many([str(row["id"])], str(uuid.uuid4()), str(row["webhook_id"])) == []
    await drained()
    assert len(receiver.log) == 1
    assert (await settled(event_id, hook["id"], "failed"))["attempt_count"] == 1


async def test_replay_during_a_scheduled_retry_does_not_fork_the_schedule(api, receiver):
    receiver.default = Answer(status=503)
    hook = await api.webhook(
        receiver.url, retry_policy=FAST | {"base_delay_ms": 1500, "max_delay_ms": 1500, "max_retries": 1}
    )
    event_id = await api.publish()
    row = await settled(event_id, hook["id"], "failed")
    assert (await api.post(f"/deliveries/{row['id']}/replay")).status_code == 202
    # The replay starts a fresh budget of one retry: replay + its retry, and the old scheduled retry
    # (due 1.5 s after the first attempt) must not add a third send beyond those.
    final = await settled(event_id, hook["id"], "dlq")
    await drained(delayed=True)  # the old scheduled retry has run, and found nothing to do
    assert final["attempt_count"] == 3 and len(receiver.log) == 3


async def test_lost_attempts_count_against_the_retry_budget(api, receiver):
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"max_retries": 1})
    event_id = await api.publish("job.closed")
    await settled(event_id, hook["id"], "success")
    # Given a delivery whose one retry is spent, and whose worker then dies mid-send
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'processing', attempts_base = attempt_count - 1, "
            "attempt_count = attempt_count + 1, lease_expires_at = now() - interval '1 second' "
            "WHERE event_id = $1",
            event_id,
        )
    # Then the sweep records the lost attempt and, the budget spent, dead-letters it (no endless resend)
    row = await settled(event_id, hook["id"], "dlq")
    assert row["dlq_reason"] == "retries_exhausted"
    attempts = (await api.get(f"/deliveries/{row['id']}")).json()["attempts"]
    assert attempts[-1]["outcome"] == "lost" and len(receiver.log) == 1


async def test_an_answer_with_a_nul_byte_is_recorded_not_retried_for_ever(api, receiver):
    receiver.then(Answer(status=200, body=b"ok\x00done", headers={"X-Odd": "a\x01b"}))
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    row = await settled(event_id, hook["id"], "success")
    details = (await api.get(f"/deliveries/{row['id']}")).json()
    assert details["attempts"][0]["response_body"] == "ok\ufffddone"
    await drained()
    assert len(receiver.log) == 1


async def test_a_late_worker_cannot_overwrite_what_the_sweep_decided(api, receiver):
    receiver.default = Answer(status=503)
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"base_delay_ms": 60_000, "max_delay_ms": 60_000})
    event_id = await api.publish()
    first = await settled(event_id, hook["id"], "failed")
    async with db.connection() as conn:
        await conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = $1", first["id"])
        message_id = await hand_over(first["id"])
        claimed = await conn.fetchrow(statements.CLAIM, [first["id"]], 30, uuid.UUID(message_id))
        # The worker stalls past its lease; the sweep records the attempt as lost and reschedules
        await conn.execute(
            "UPDATE webhook_deliveries SET lease_expires_at = now() - interval '1 s' WHERE id = $1", first["id"]
        )
    await schedule.sweep()
    # Then the stalled worker wakes up with a success
    sent = Sent(200, {}, "late", False, None, None, 5)
    assert await delivery.record_successes([(claimed, sent, {}, datetime.now(UTC))]) is None
    row = await settled(event_id, hook["id"], "failed")
    assert row["attempt_count"] == 2  # the sweep's decision stands
    outcomes = [a["outcome"] for a in (await api.get(f"/deliveries/{first['id']}")).json()["attempts"]]
    assert sorted(outcomes) == ["failed", "lost", "success"]  # and every attempt is on record


async def test_bulk_retry_of_items_that_fail_again_ends(api, receiver):
    receiver.default = Answer(status=400)
    hook = await api.webhook(receiver.url)
    events = [await api.publish() for _ in range(3)]
    for event_id in events:
        await settled(event_id, hook["id"], "dlq")
    job_id = (await api.post("/dlq/retry", {})).json()["job_id"]

    async def done():
        job = (await api.get(f"/jobs/{job_id}")).json()
        return job if job["status"] == "done" else None

    job = await wait_until(done)
    assert (job["total"], job["processed"]) == (3, 3)
    await wait_until(lambda: _all_dead(hook["id"], 3))
    assert len(receiver.log) == 6  # each tried once more, not again and again


async def _all_dead(webhook_id: str, count: int) -> bool:
    async with db.connection() as conn:
        return (
            await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'dlq'", webhook_id
            )
            == count
        )


async def test_credentials_in_custom_headers_are_sent_but_never_shown(api, receiver, client):
    hook = await api.webhook(receiver.url, headers={"Authorization": "Bearer very-secret-token-123", "X-Team": "ops"})
    assert hook["headers"] == {"Authorization": "••••-123", "X-Team": "ops"}
    # Sending back what was shown keeps the real value
    patched = await api.patch(f"/webhooks/{hook['id']}", {"headers": hook["headers"] | {"X-Team": "payroll"}})
    assert patched.status_code == 200, patched.text
    event_id = await api.publish()
    (request,) = await receiver.wait_for(1)
    assert request.headers["authorization"] == "Bearer very-secret-token-123"
    assert request.headers["x-team"] == "payroll"
    row = await settled(event_id, hook["id"], "success")
    logged = (await api.get(f"/deliveries/{row['id']}")).json()
    assert "very-secret-token" not in json.dumps(logged)
    async with db.connection() as conn:
        stored = await conn.fetchval("SELECT headers::text FROM webhooks WHERE id = $1", hook["id"])
    assert "very-secret-token" not in stored and "payroll" not in stored


def test_retry_after_dates_without_a_zone_and_garbage_are_understood():
    soon = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S -0000")
    assert 25 <= parse_retry_after(soon) <= 31
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Tue, 99 Foo 2026") is None
    assert parse_retry_after("") is None
