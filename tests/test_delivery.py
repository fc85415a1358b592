"""Reliable delivery end to end: API -> publish_event -> scheduler fan-out -> Redis -> worker -> receiver.

Every test here runs the real pipeline: the scheduler loop in the test's event loop, a real
`dramatiq tasks` worker process, and a scripted HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from app.core import db
from app.webhooks.tables import Webhook, WebhookDelivery
from tests.pipeline import FAST, delivery_of, drained, hand_over, settled, wait_until
from tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")


async def test_event_arrives_signed_as_the_contract_says(api, receiver):
    hook = await api.webhook(receiver.url, headers={"X-Partner": "acme"})
    event_id = await api.publish("job.created", {"title": "Night nurse", "rate": 42.5})

    (request,) = await receiver.wait_for(1)
    body = json.loads(request.body)
    assert body["id"] == event_id and body["type"] == "job.created"
    assert body["data"] == {"title": "Night nurse", "rate": 42.5}
    assert body["org_id"] == str(api.organisation.id) and body["metadata"] == {}
    assert body["timestamp"].endswith("Z")
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("InTime-Webhooks/")
    assert headers["x-intime-event"] == "job.created"
    assert headers["x-partner"] == "acme"
    delivery = await settled(event_id, hook["id"], "success")
    assert headers["x-intime-delivery"] == headers["webhook-id"] == str(delivery["id"])
    expected = "sha256=" + hmac.new(hook["secret"].encode(), request.body, hashlib.sha256).hexdigest()
    assert headers["x-intime-signature"] == expected
    StandardWebhook(hook["secret"]).verify(request.body, {k: v for k, v in headers.items()})

    details = (await api.get(f"/deliveries/{delivery['id']}")).json()
    (attempt,) = details["attempts"]
    assert attempt["response_status"] == 200 and attempt["outcome"] == "success"
    assert attempt["trigger"] == "scheduled" and attempt["duration_ms"] >= 0
    assert attempt["request_headers"]["X-InTime-Event"] == "job.created"
    assert hook["secret"] not in json.dumps(details)


async def test_failure_is_retried_on_schedule_and_then_succeeds(api, receiver):
    receiver.then(Answer(status=503))
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    first, second = await receiver.wait_for(2)
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.at - first.at >= 0.2  # the fixed policy's 200 ms
    delivery = await settled(event_id, hook["id"], "success")
    attempts = (await api.get(f"/deliveries/{delivery['id']}")).json()["attempts"]
    assert [a["response_status"] for a in attempts] == [503, 200]
    assert attempts[0]["next_delay_ms"] == 200 and attempts[1]["next_delay_ms"] is None


async def test_retries_exhausted_go_to_the_dlq_and_are_announced(api, receiver):
    receiver.default = Answer(status=500)
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"max_retries": 1})
    event_id = await api.publish()
    delivery = await settled(event_id, hook["id"], "dlq")
    assert delivery["dlq_reason"] == "retries_exhausted" and delivery["attempt_count"] == 2
    assert len(receiver.log) == 2
    async with db.connection() as conn:
        note = await conn.fetchval(
            "SELECT payload::text FROM events WHERE event_type = 'webhook.delivery.dead_lettered'"
        )
    assert json.loads(note)["delivery_id"] == str(delivery["id"])
    dlq = (await api.get("/dlq")).json()
    assert [item["id"] for item in dlq["items"]] == [str(delivery["id"])]


@pytest.mark.parametrize(("status", "reason"), [(400, "non_retryable"), (404, "non_retryable"), (410, "gone")])
async def test_non_retryable_answers_go_straight_to_the_dlq(api, receiver, status, reason):
    receiver.default = Answer(status=status)
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    delivery = await settled(event_id, hook["id"], "dlq")
    assert delivery["dlq_reason"] == reason and delivery["attempt_count"] == 1
    row = await Webhook.objects().get(Webhook.id == hook["id"])
    assert row.enabled is (status != 410)
    if status == 410:
        assert "410 Gone" in row.disabled_reason


async def test_429_with_retry_after_waits_at_least_that_long(api, receiver):
    receiver.then(Answer(status=429, headers={"Retry-After": "1"}))
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"max_delay_ms": 5000})
    event_id = await api.publish()
    first, second = await receiver.wait_for(2)
    assert second.at - first.at >= 1.0
    await settled(event_id, hook["id"], "success")


async def test_slow_and_vanishing_receivers_are_recorded_with_their_error_class(api, receiver):
    receiver.then(Answer(delay=3), Answer(close=True))
    hook = await api.webhook(receiver.url, timeout_seconds=1)
    event_id = await api.publish()
    delivery = await settled(event_id, hook["id"], "success")
    attempts = (await api.get(f"/deliveries/{delivery['id']}")).json()["attempts"]
    assert [a["error_class"] for a in attempts[:2]] == ["timeout", attempts[1]["error_class"]]
    assert attempts[1]["error_class"] in ("connection_reset", "protocol")
    assert attempts[2]["response_status"] == 200


async def test_tenth_failed_delivery_in_a_row_disables_the_webhook_and_not_the_ninth(api, receiver):
    receiver.default = Answer(status=500)
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"max_retries": 0})
    await Webhook.update({Webhook.consecutive_failures: 8}).where(Webhook.id == hook["id"])
    first = await api.publish()
    await settled(first, hook["id"], "dlq")
    row = await Webhook.objects().get(Webhook.id == hook["id"])
    assert row.enabled and row.consecutive_failures == 9
    second = await api.publish()
    await settled(second, hook["id"], "dlq")
    row = await Webhook.objects().get(Webhook.id == hook["id"])
    assert not row.enabled and "10 failed deliveries in a row" in row.disabled_reason
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE event_type = 'webhook.disabled'") == 1
    # Later events reach it no more
    await api.publish()
    await drained()
    assert len(receiver.log) == 2


async def test_failed_attempts_of_a_delivery_that_succeeds_do_not_count_towards_disabling(api, receiver):
    """A receiver down for a deploy fails many attempts at once; its deliveries still get through."""
    receiver.then(*[Answer(status=503)] * 12)
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"max_retries": 15})
    await Webhook.update({Webhook.consecutive_failures: 9}).where(Webhook.id == hook["id"])
    await settled(await api.publish(), hook["id"], "success")
    row = await Webhook.objects().get(Webhook.id == hook["id"])
    assert row.enabled and row.consecutive_failures == 0
    assert len(receiver.log) == 13


async def test_success_resets_the_failure_count(api, receiver):
    receiver.then(Answer(status=500))
    hook = await api.webhook(receiver.url)
    await Webhook.update({Webhook.consecutive_failures: 5}).where(Webhook.id == hook["id"])
    await settled(await api.publish(), hook["id"], "success")
    assert (await Webhook.objects().get(Webhook.id == hook["id"])).consecutive_failures == 0


async def test_rotation_signs_with_both_secrets_for_a_day(api, receiver):
    hook = await api.webhook(receiver.url)
    rotated = (await api.post(f"/webhooks/{hook['id']}/rotate-secret")).json()
    await api.publish()
    (request,) = await receiver.wait_for(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    StandardWebhook(hook["secret"]).verify(request.body, request.headers)
    StandardWebhook(rotated["secret"]).verify(request.body, request.headers)
    assert (
        request.headers["x-intime-signature"]
        == "sha256=" + hmac.new(rotated["secret"].encode(), request.body, hashlib.sha256).hexdigest()
    )


async def test_test_send_and_replay_add_attempts_to_the_same_delivery(api, receiver):
    hook = await api.webhook(receiver.url, event_patterns=["candidate.created"])
    response = await api.post(f"/webhooks/{hook['id']}/test")
    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    (first,) = await receiver.wait_for(1)
    assert json.loads(first.body)["type"] == "webhook.test"

    async def recorded():  # the receiver has the request before the worker has written its answer
        found = (await api.get(f"/deliveries/{delivery_id}")).json()
        return found if found["status"] == "success" else None

    await wait_until(recorded)
    assert (await api.post(f"/deliveries/{delivery_id}/replay")).status_code == 202
    _, second = await receiver.wait_for(2)
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == delivery_id

    async def two_attempts():
        found = (await api.get(f"/deliveries/{delivery_id}")).json()
        return found if len(found["attempts"]) == 2 and found["status"] == "success" else None

    found = await wait_until(two_attempts)
    assert [a["trigger"] for a in found["attempts"]] == ["test", "manual"]


async def test_disabling_a_webhook_dead_letters_what_waits_for_it(api, receiver):
    receiver.default = Answer(status=503)
    hook = await api.webhook(receiver.url, retry_policy=FAST | {"base_delay_ms": 60_000, "max_delay_ms": 60_000})
    event_id = await api.publish()
    await settled(event_id, hook["id"], "failed")
    patched = await api.patch(f"/webhooks/{hook['id']}", {"enabled": False})
    assert patched.json()["enabled"] is False
    assert patched.json()["disabled_reason"] == "disabled by an admin"

    # What waited goes to the DLQ soon after, in the scheduler's batches, announced once by the count
    async def dead_lettered():
        found = await delivery_of(event_id, hook["id"])
        return found if found["status"] == "dlq" else None

    assert (await wait_until(dead_lettered))["dlq_reason"] == "webhook_disabled"
    async with db.connection() as conn:
        announced = await conn.fetch(
            "SELECT event_type, payload FROM events WHERE event_type LIKE 'webhook.d%' AND org_id = $1",
            api.organisation.id,
        )
    assert [(row["event_type"], json.loads(row["payload"])["dead_lettered"]) for row in announced] == [
        ("webhook.disabled", 1)
    ]


async def test_two_workers_racing_for_one_delivery_send_it_once(api, receiver):
    from app.webhooks import delivery

    hook = await api.webhook(receiver.url, event_patterns=["candidate.created"])
    async with db.connection() as conn:
        await conn.execute("UPDATE webhooks SET enabled = false WHERE id = $1", hook["id"])
    event_id = await api.publish("job.created")  # nobody receives this one (job.* is not subscribed)
    async with db.connection() as conn:
        await conn.execute("UPDATE webhooks SET enabled = true WHERE id = $1", hook["id"])
        delivery_id = await conn.fetchval(
            "INSERT INTO webhook_deliveries (id, org_id, webhook_id, event_id, event_type, status, created_at, "
            "updated_at) VALUES (gen_random_uuid(), $1, $2, $3, 'job.created', 'pending', now(), now()) RETURNING id",
            api.organisation.id,
            hook["id"],
            event_id,
        )
    message_id = await hand_over(delivery_id)  # and the message carrying it is taken by five workers at once
    results = await asyncio.gather(*(delivery.deliver_many([str(delivery_id)], message_id) for _ in range(5)))
    assert results == [[]] * 5
    assert len(receiver.log) == 1
    assert (await WebhookDelivery.objects().get(WebhookDelivery.id == delivery_id)).attempt_count == 1
