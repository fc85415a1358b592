"""The retention page without a browser (a plain form post, as without JavaScript), and the DLQ page's
notice of items about to reach their retention."""

from __future__ import annotations

import re
import uuid

from app.core import db
from app.events import services as events
from app.lifecycle import retention
from app.webhooks import dlq, fanout, services
from tests.factories import sign_in

BASE = "/employee/admin/integrations"


def form(client, **fields) -> dict:
    return {"_csrf_token": client.cookies.get("intime_csrf")} | fields


def text_of(html: str) -> str:
    """What a person reads: the page without its tags, spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


async def dead_letters(org_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """`count` uncleared DLQ items (their webhook disabled with the deliveries still waiting)."""
    webhook, _ = await services.create_webhook(
        org_id, {"name": "ATS", "url": "http://127.0.0.1:9/hook", "event_patterns": ["job.*"]}
    )
    for n in range(count):
        await events.publish(org_id, "job.created", {"n": n})
    await fanout.fan_out_backlog()
    await services.set_enabled(org_id, webhook.id, False)
    while await dlq.drain_stopped():
        pass
    async with db.connection() as conn:
        ids = await conn.fetch(
            "SELECT id FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'dlq' ORDER BY created_at",
            webhook.id,
        )
    assert len(ids) == count
    return [row["id"] for row in ids]


async def dead_lettered_ago(delivery_id: uuid.UUID, interval: str, *, cleared: bool = False) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET dlq_at = now() - $2::text::interval, "
            "cleared_at = CASE WHEN $3 THEN now() END WHERE id = $1",
            delivery_id,
            interval,
            cleared,
        )


async def test_the_dlq_page_says_how_many_items_reach_their_retention_within_a_day(client, factory):
    # Given five DLQ items of an organisation keeping deliveries the default 30 days: two within a day
    # of it, one past it already, one two and a half days off, and one within a day but cleared
    admin = await factory.user()
    soon_a, soon_b, overdue, later, cleared = await dead_letters(admin.org.id, 5)
    await dead_lettered_ago(soon_a, "29 days 12 hours")
    await dead_lettered_ago(soon_b, "29 days 2 hours")
    await dead_lettered_ago(overdue, "31 days")
    await dead_lettered_ago(later, "27 days 12 hours")
    await dead_lettered_ago(cleared, "29 days 12 hours", cleared=True)
    # and another organisation with one of its own within a day
    other = await factory.user()
    (theirs,) = await dead_letters(other.org.id, 1)
    await dead_lettered_ago(theirs, "29 days 12 hours")

    # When the admin opens the DLQ page
    await sign_in(client, admin)
    page = text_of((await client.get(f"{BASE}/dlq")).text)

    # Then it counts the three uncleared ones of this organisation, the first of them past already
    assert "3 items reach their retention (30 days) within 24 h; retry or export them" in page
    assert "The first reached it 1 d ago" in page

    # When the organisation keeps deliveries 28 days instead, the one 27.5 days old is within a day too
    await retention.set_for_org(admin.org.id, {"deliveries": "28"}, None)
    page = text_of((await client.get(f"{BASE}/dlq")).text)
    assert "4 items reach their retention (28 days) within 24 h" in page


async def test_the_dlq_page_says_nothing_when_no_item_is_near_its_retention(client, factory):
    admin = await factory.user()
    (item,) = await dead_letters(admin.org.id, 1)
    await dead_lettered_ago(item, "28 days 12 hours")
    await sign_in(client, admin)
    response = await client.get(f"{BASE}/dlq")
    assert 'data-testid="dlq-row"' in response.text
    assert 'data-testid="dlq-expiring"' not in response.text

    await dead_lettered_ago(item, "29 days 1 hour")
    page = text_of((await client.get(f"{BASE}/dlq")).text)
    assert "1 item reaches its retention (30 days) within 24 h; retry or export it" in page
    assert re.search(r"The first reaches it in 2[23] h", page)  # 23 h less the seconds the test took


async def test_the_expiring_count_can_read_the_index_of_uncleared_dlq_items(factory):
    org = await factory.org()
    async with db.connection() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0] for row in await conn.fetch(f"EXPLAIN {retention.DLQ_EXPIRING}", org.id, float(29 * 86400))
        )
    assert "webhook_deliveries_dlq_idx" in plan, plan


async def test_a_form_post_saves_and_redirects_once_with_a_message(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    page = await client.get(f"{BASE}/retention")
    assert page.status_code == 200
    assert 'placeholder="default: 30"' in page.text

    saved = await client.post(f"{BASE}/retention", data=form(client, deliveries="45", bodies=""))
    assert saved.status_code == 303 and saved.headers["location"] == f"{BASE}/retention"
    after = text_of((await client.get(saved.headers["location"])).text)
    assert "Retention saved" in after
    assert "45 days chosen" in after
    assert "Retention saved" not in text_of((await client.get(f"{BASE}/retention")).text)  # once only
    assert (await retention.for_org(admin.org.id)).chosen["deliveries"] == 45


async def test_bad_values_come_back_with_422_beside_their_fields(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    await client.get(f"{BASE}/retention")
    huge = "9" * 5000
    response = await client.post(
        f"{BASE}/retention", data=form(client, deliveries=huge, events="0", jobs="²", audit="7")
    )
    assert response.status_code == 422
    html = response.text
    assert f'value="{huge}"' in html and 'value="0"' in html and 'value="7"' in html
    for field in ("deliveries", "events", "jobs"):
        assert f'id="{field}-error"' in html
        assert re.search(rf'name="{field}"[^>]*aria-describedby="{field}-hint {field}-error"', html)
    assert "Enter whole days from 1 to 90" in text_of(html)
    assert 'id="audit-error"' not in html
    assert (await retention.for_org(admin.org.id)).chosen["audit"] is None  # nothing saved


async def test_a_viewer_sees_the_values_but_may_not_change_them(client, factory):
    viewer = await factory.user(role="viewer")
    await sign_in(client, viewer)
    page = await client.get(f"{BASE}/retention")
    assert page.status_code == 200
    assert "Deliveries and their attempts" in page.text and "30 days" in page.text
    assert 'data-testid="retention-form"' not in page.text
    refused = await client.post(f"{BASE}/retention", data=form(client, deliveries="5"))
    assert refused.status_code == 403
    assert (await retention.for_org(viewer.org.id)).chosen["deliveries"] is None
