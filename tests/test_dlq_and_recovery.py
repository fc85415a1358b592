"""The dead-letter queue (one by one and in bulk, page and API) and recovery from lost messages."""

from __future__ import annotations

import asyncio
import re

import pytest

from app.core import db
from app.core.redis import get_redis
from app.webhooks.tables import Job, WebhookDelivery
from tests.factories import csrf_headers, sign_in
from tests.pipeline import bearer, settled, wait_until
from tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")
BASE = "/employee/admin/integrations"


async def dead_letters(api, receiver, count: int) -> tuple[dict, list[str]]:
    """A webhook whose receiver answered 400 to `count` events: that many DLQ items."""
    receiver.default = Answer(status=400)
    hook = await api.webhook(receiver.url)
    events = [await api.publish() for _ in range(count)]
    for event_id in events:
        await settled(event_id, hook["id"], "dlq")
    return hook, events


async def test_retry_one_from_the_dlq_after_the_receiver_is_fixed(api, receiver):
    hook, (event_id,) = await dead_letters(api, receiver, 1)
    item = (await api.get("/dlq")).json()["items"][0]
    receiver.default = Answer(status=200)
    assert (await api.post(f"/dlq/{item['id']}/retry")).status_code == 202
    delivery = await settled(event_id, hook["id"], "success")
    assert delivery["attempt_count"] == 2
    assert (await api.get("/dlq")).json()["items"] == []
    assert (await api.post(f"/dlq/{item['id']}/retry")).status_code == 409  # not in the DLQ any more


async def test_cleared_items_leave_the_list_but_stay_for_audit(client, api, receiver):
    await dead_letters(api, receiver, 1)
    item = (await api.get("/dlq")).json()["items"][0]
    response = await client.delete(f"/api/v1/dlq/{item['id']}", headers=await _headers(api))
    assert response.status_code == 204
    assert (await api.get("/dlq")).json()["items"] == []
    row = await WebhookDelivery.objects().get(WebhookDelivery.id == item["id"])
    assert row.status == "dlq" and row.cleared_at is not None


async def _headers(api) -> dict:
    from app.accounts import tokens

    _, token = await tokens.create_token(api.organisation.id, "deleter", "dlq:write")
    return bearer(token)


async def test_bulk_retry_by_filter_runs_as_a_job_with_progress(api, receiver):
    hook, events = await dead_letters(api, receiver, 6)
    receiver.default = Answer(status=200)
    started = await api.post("/dlq/retry", {"webhook_id": hook["id"], "event_type": "job.created"})
    assert started.status_code == 202
    job_id = started.json()["job_id"]

    async def job_done():
        job = (await api.get(f"/jobs/{job_id}")).json()
        return job if job["status"] == "done" else None

    job = await wait_until(job_done)
    assert (job["total"], job["processed"], job["errors"]) == (6, 6, 0)
    for event_id in events:
        await settled(event_id, hook["id"], "success")


async def test_bulk_clear_from_the_page_shows_a_progress_bar_that_stops_polling(client, factory, api, receiver):
    hook, _ = await dead_letters(api, receiver, 3)
    admin = await factory.user(org=api.organisation)
    await sign_in(client, admin)
    page = await client.get(f"{BASE}/dlq")
    assert len(re.findall('data-testid="dlq-row"', page.text)) == 3
    widget = await client.post(
        f"{BASE}/dlq/bulk",
        data={"action": "clear", "webhook_id": str(hook["id"])},
        headers=csrf_headers(client) | {"HX-Request": "true"},
    )
    assert "<progress" in widget.text and 'hx-trigger="every 1s"' in widget.text
    job = await Job.objects().first()

    async def finished():
        response = await client.get(f"{BASE}/jobs/{job.id}", headers={"HX-Request": "true"})
        return response if response.status_code == 286 else None

    final = await wait_until(finished)
    assert "hx-trigger" not in final.text and 'value="3"' in final.text and "Done." in final.text
    assert "Nothing in the dead-letter queue" in (await client.get(f"{BASE}/dlq")).text


async def test_dlq_page_filters_and_viewers_get_no_buttons(client, factory, api, receiver):
    await dead_letters(api, receiver, 2)
    viewer = await factory.user(org=api.organisation, role="viewer")
    await sign_in(client, viewer)
    page = (await client.get(f"{BASE}/dlq")).text
    assert page.count('data-testid="dlq-row"') == 2 and 'data-testid="dlq-retry"' not in page
    filtered = (await client.get(f"{BASE}/dlq", params={"event_type": "job.closed"})).text
    assert 'data-testid="dlq-row"' not in filtered
    assert (
        await client.post(f"{BASE}/dlq/bulk", data={"action": "retry"}, headers=csrf_headers(client))
    ).status_code == 403


async def test_deliveries_complete_although_redis_is_wiped_mid_run(api, receiver):
    # Given slow answers, so that messages are still queued in Redis
    receiver.default = Answer(status=200, delay=0.2)
    hook = await api.webhook(receiver.url)
    events = [await api.publish() for _ in range(12)]
    await receiver.wait_for(1)
    # When Redis loses everything (the queue, delayed retries, acks)
    await get_redis().flushdb()
    # Then the scheduler's sweep finds what PostgreSQL still owes, and every event arrives
    for event_id in events:
        await settled(event_id, hook["id"], "success")
    received = {r.headers["x-intime-delivery"] for r in receiver.log}
    async with db.connection() as conn:
        ids = {
            str(r["id"])
            for r in await conn.fetch("SELECT id FROM webhook_deliveries WHERE webhook_id = $1", hook["id"])
        }
    assert received == ids


async def test_a_worker_that_dies_mid_send_leaves_a_lost_attempt_and_the_delivery_is_sent_again(api, receiver):
    hook = await api.webhook(receiver.url)
    event_id = await api.publish("job.closed")
    await settled(event_id, hook["id"], "success")
    # Simulate a worker that claimed the delivery and died: processing, lease already run out
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'processing', attempt_count = attempt_count + 1, "
            "lease_expires_at = now() - interval '1 second' WHERE event_id = $1",
            event_id,
        )
    delivery = await settled(event_id, hook["id"], "success")
    await asyncio.sleep(0)
    details = (await api.get(f"/deliveries/{delivery['id']}")).json()
    assert [a["outcome"] for a in details["attempts"]] == ["success", "lost", "success"]
    assert details["attempts"][1]["error_class"] == "lease_expired"
