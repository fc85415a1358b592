"""Auto-disable: what counts towards it, and the warnings before it (issue 13, finding 7). In-process:
the engine's functions are called directly, against real PostgreSQL and a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import uuid

from app.core import db
from app.webhooks import delivery_settings, fanout, operations
from app.webhooks.tables import Webhook
from tests.factories import sign_in
from tests.pipeline import deliver_now
from tests.receiver import Answer


async def _webhook_state(webhook_id: str) -> tuple[bool, int]:
    row = await Webhook.select(Webhook.enabled, Webhook.consecutive_failures).where(Webhook.id == webhook_id).first()
    return row["enabled"], row["consecutive_failures"]


async def test_failing_test_sends_never_disable_a_webhook(api, receiver):
    # Given a webhook whose endpoint refuses everything (404: its address is wrong, which counts), one
    # failed delivery short of being disabled
    receiver.default = Answer(status=404)
    hook = await api.webhook(receiver.url)
    async with db.connection() as conn:
        await conn.execute("UPDATE webhooks SET consecutive_failures = 9 WHERE id = $1", uuid.UUID(hook["id"]))

    # When an admin sends twelve test events to it, each refused
    for _ in range(12):
        test_delivery = await operations.send_test(api.organisation.id, uuid.UUID(hook["id"]))
        await deliver_now(test_delivery)

    # Then it is still enabled, and the count of real failures is as it was
    assert len(receiver.log) == 12
    assert await _webhook_state(hook["id"]) == (True, 9)


async def test_a_failing_webhook_warns_at_5_and_8_failed_deliveries_before_it_is_disabled(api, receiver):
    receiver.default = Answer(status=404)
    hook = await api.webhook(receiver.url)
    for n in range(9):
        await api.publish(payload={"n": n})
    _, created = await fanout.fan_out_backlog()
    for delivery_id in created:
        await deliver_now(delivery_id)

    async with db.connection() as conn:
        warnings = await conn.fetch(
            "SELECT payload FROM events WHERE org_id = $1 AND event_type = 'webhook.failing' ORDER BY created_at",
            api.organisation.id,
        )
    shown = [json.loads(row["payload"]) for row in warnings]
    assert [w["consecutive_failures"] for w in shown] == [5, 8]
    assert all(w["webhook_id"] == hook["id"] and w["disabled_at"] == 10 for w in shown)
    assert await _webhook_state(hook["id"]) == (True, 9)


async def _refused_deliveries(api, receiver, status: int, count: int) -> dict:
    receiver.default = Answer(status=status)
    hook = await api.webhook(receiver.url)
    for n in range(count):
        await api.publish(payload={"n": n})
    _, created = await fanout.fan_out_backlog()
    for delivery_id in created:
        await deliver_now(delivery_id)
    return hook


async def test_refusals_of_a_payload_do_not_disable_the_webhook_unless_the_organisation_counts_them(api, receiver):
    # Given the default rules: twelve events refused with 400 go to the DLQ, the webhook stays enabled
    hook = await _refused_deliveries(api, receiver, 400, 12)
    assert await _webhook_state(hook["id"]) == (True, 0)
    assert (await api.get("/dlq", webhook_id=hook["id"])).json()["items"][0]["dlq_reason"] == "non_retryable"

    # When the organisation counts them (for receivers that answer 4xx only when they are broken)
    rules = await api.put("/delivery-settings", {"count_payload_rejections": True})
    assert rules.status_code == 200
    assert rules.json() == {
        "count_payload_rejections": True,
        "max_in_flight": 10,
        "auto_disable_after": 10,
        "warnings_at": [5, 8],
    }

    # Then ten more refusals disable another webhook
    other = await _refused_deliveries(api, receiver, 422, 10)
    enabled, failures = await _webhook_state(other["id"])
    assert not enabled and failures == 10


async def test_the_delivery_rules_refuse_what_they_do_not_know(api):
    for body in ({"count_payload_rejections": "yes"}, {"colour": "red"}, [1]):
        answer = await api.put("/delivery-settings", body)
        assert answer.status_code == 422 and answer.headers["content-type"].startswith("application/problem+json")
    assert (await api.get("/delivery-settings")).json()["count_payload_rejections"] is False


async def test_an_admin_sets_the_rule_on_the_retry_config_page(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    page = await client.get("/employee/admin/integrations/retry-config")
    box = page.text.split('data-testid="count-payload-rejections"')[1].split(">")[0]
    assert "checked" not in box
    saved = await client.post(
        "/employee/admin/integrations/retry-config/rules",
        data={"count_payload_rejections": "on", "_csrf_token": client.cookies.get("intime_csrf")},
    )
    assert saved.status_code == 200 and 'data-testid="rules-saved"' in saved.text
    assert (await delivery_settings.rules(admin.org.id)).count_payload_rejections is True
