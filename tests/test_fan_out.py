"""Fan-out: one delivery per matching enabled webhook of the event's organisation, once."""

from __future__ import annotations

from app.core import db
from app.events import services as events
from app.webhooks import dlq, fanout, services
from app.webhooks.tables import WebhookDelivery

URL = "http://127.0.0.1:9/hook"


async def hook(org, patterns: list[str], enabled: bool = True):
    webhook, _ = await services.create_webhook(
        org.id, {"name": "h", "url": URL, "event_patterns": patterns, "enabled": enabled}
    )
    return webhook


async def test_each_event_reaches_exactly_the_matching_enabled_webhooks_of_its_organisation(factory):
    org, other = await factory.org(), await factory.org()
    exact = await hook(org, ["job.created"])
    category = await hook(org, ["job.*"])
    domain = await hook(org, ["recruiting.*"])
    everything = await hook(org, ["*"])
    people = await hook(org, ["people.*"])
    disabled = await hook(org, ["*"], enabled=False)
    foreign = await hook(other, ["*"])

    event_id = await events.publish(org.id, "job.created", {})
    taken, created = await fanout.fan_out_backlog()
    assert taken == 1 and len(created) == 4
    rows = await WebhookDelivery.select(WebhookDelivery.webhook.as_alias("webhook")).where(
        WebhookDelivery.event == event_id
    )
    got = {row["webhook"] for row in rows}
    assert got == {exact.id, category.id, domain.id, everything.id}
    assert not got & {people.id, disabled.id, foreign.id}


async def test_fan_out_twice_creates_no_duplicates(factory):
    org = await factory.org()
    await hook(org, ["*"])
    event_id = await events.publish(org.id, "candidate.created", {})
    await fanout.fan_out_backlog()
    # As if a second scheduler had picked the same event up again
    async with db.connection() as conn:
        await conn.execute("UPDATE events SET fanned_out_at = NULL WHERE id = $1", event_id)
    taken, created = await fanout.fan_out_backlog()
    assert taken == 1 and created == []
    assert await WebhookDelivery.count().where(WebhookDelivery.event == event_id) == 1
    assert await fanout.fan_out_backlog() == (0, [])


async def test_events_published_while_the_scheduler_was_down_are_fanned_out_by_the_sweep(factory):
    org = await factory.org()
    await hook(org, ["job.*"])
    for _ in range(7):
        await events.publish(org.id, "job.closed", {})
    taken, created = await fanout.fan_out_backlog(limit=5)
    assert (taken, len(created)) == (5, 5)
    taken, created = await fanout.fan_out_backlog(limit=5)
    assert (taken, len(created)) == (2, 2)


async def test_deleting_a_webhook_dead_letters_what_waits_for_it(factory):
    org = await factory.org()
    webhook = await hook(org, ["*"])
    await events.publish(org.id, "job.created", {})
    await fanout.fan_out_backlog()
    await services.delete_webhook(org.id, webhook.id)
    # The scheduler's next batch takes what waited (the request does not), with no event per delivery
    assert await dlq.drain_stopped() == 1
    row = await WebhookDelivery.objects().first()
    assert row.status == "dlq" and row.dlq_reason == "webhook_deleted"
    async with db.connection() as conn:
        announced = await conn.fetchval(
            "SELECT count(*) FROM events WHERE event_type = 'webhook.delivery.dead_lettered'"
        )
    assert announced == 0
