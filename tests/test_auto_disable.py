"""Auto-disable: what counts towards it, and the warnings before it (issue 13, finding 7). In-process:
the engine's functions are called directly, against real PostgreSQL and a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import uuid

from app.core import db
from app.webhooks import delivery, fanout, operations
from app.webhooks.tables import Webhook
from tests.receiver import Answer


async def _webhook_state(webhook_id: str) -> tuple[bool, int]:
    row = await Webhook.select(Webhook.enabled, Webhook.consecutive_failures).where(Webhook.id == webhook_id).first()
    return row["enabled"], row["consecutive_failures"]


async def test_failing_test_sends_never_disable_a_webhook(api, receiver):
    # Given a webhook whose endpoint refuses everything, one failed delivery short of being disabled
    receiver.default = Answer(status=400)
    hook = await api.webhook(receiver.url)
    async with db.connection() as conn:
        await conn.execute("UPDATE webhooks SET consecutive_failures = 9 WHERE id = $1", uuid.UUID(hook["id"]))

    # When an admin sends twelve test events to it, each refused
    for _ in range(12):
        test_delivery = await operations.send_test(api.organisation.id, uuid.UUID(hook["id"]))
        await delivery.deliver_many([str(test_delivery)])

    # Then it is still enabled, and the count of real failures is as it was
    assert len(receiver.log) == 12
    assert await _webhook_state(hook["id"]) == (True, 9)


async def test_a_failing_webhook_warns_at_5_and_8_failed_deliveries_before_it_is_disabled(api, receiver):
    receiver.default = Answer(status=400)
    hook = await api.webhook(receiver.url)
    for n in range(9):
        await api.publish(payload={"n": n})
    _, created = await fanout.fan_out_backlog()
    for delivery_id in created:
        await delivery.deliver_many([str(delivery_id)])

    async with db.connection() as conn:
        warnings = await conn.fetch(
            "SELECT payload FROM events WHERE org_id = $1 AND event_type = 'webhook.failing' ORDER BY created_at",
            api.organisation.id,
        )
    shown = [json.loads(row["payload"]) for row in warnings]
    assert [w["consecutive_failures"] for w in shown] == [5, 8]
    assert all(w["webhook_id"] == hook["id"] and w["disabled_at"] == 10 for w in shown)
    assert await _webhook_state(hook["id"]) == (True, 9)
