"""The webhook debugger: figures, charts, history with filters and search, inspector, replay."""

from __future__ import annotations

import re
import shlex
import uuid

import pytest

from app.core import db
from app.webhooks import services, stats
from devtools import seed
from tests.factories import csrf_headers, sign_in
from tests.pipeline import bearer, settled, wait_until
from tests.receiver import Answer

BASE = "/employee/admin/integrations"


def test_percentiles_come_from_the_histogram():
    buckets = [0] * stats.BUCKET_COUNT
    buckets[stats.bucket_of(30) - 1] = 50  # [25, 50)
    buckets[stats.bucket_of(300) - 1] = 50  # [250, 500)
    assert 25 <= stats.percentile(buckets, 0.5) <= 50
    assert 250 <= stats.percentile(buckets, 0.95) <= 500
    assert stats.percentile([0] * stats.BUCKET_COUNT, 0.5) is None
    slowest = [0] * stats.BUCKET_COUNT
    slowest[-1] = 3
    assert stats.percentile(slowest, 0.5) == stats.BUCKETS_MS[-1]  # "over a minute"


@pytest.fixture
async def seeded(factory):
    """An admin's webhook with 400 synthetic deliveries over two days (5 % dead-lettered, at random:
    enough that the last day has failures to hatch in all but one run in tens of thousands)."""
    admin = await factory.user()
    webhook, _ = await services.create_webhook(
        admin.org.id, {"name": "Seeded", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await seed.seed_deliveries(webhook.id, 400, days=2)
    return admin, webhook


async def test_figures_and_charts_show_the_last_day_and_week(client, seeded):
    admin, webhook = seeded
    await sign_in(client, admin)
    page = (await client.get(f"{BASE}/webhooks/{webhook.id}")).text
    week = re.search(r'data-testid="window-168".*?<span class="value">([\d,]+)</span>', page, re.S)
    assert week and int(week.group(1).replace(",", "")) >= 395
    assert "of attempts succeeded" in page and "p95 ≈" in page
    assert page.count('<svg class="chart"') == 2 and 'fill="url(#hatch)"' in page  # failures hatched
    assert "<title>Attempts per hour, last 24 hours</title>" in page
    seven = (
        await client.get(
            f"{BASE}/webhooks/{webhook.id}",
            params={"window": "7d"},
            headers={"HX-Request": "true", "HX-Target": "overview"},
        )
    ).text
    assert "last 7 days" in seven and 'id="overview"' in seven and "<h1>" not in seven


async def test_stats_api_matches_the_rollups(client, seeded, factory):
    admin, webhook = seeded
    _, token = await factory.token(admin.org, scopes="webhooks:read")
    body = (
        await client.get(f"/api/v1/webhooks/{webhook.id}/stats", params={"window": "7d"}, headers=bearer(token))
    ).json()
    assert body["attempts"] == body["successes"] + body["failures"] >= 395
    assert 0.85 < body["success_rate"] < 1 and body["p50_ms"] <= body["p95_ms"]
    assert len(body["hourly"]) == 168
    assert (
        await client.get(f"/api/v1/webhooks/{webhook.id}/stats", params={"window": "1y"}, headers=bearer(token))
    ).status_code == 422


async def test_history_filters_search_and_pages_without_offset(client, seeded):
    admin, webhook = seeded
    await sign_in(client, admin)
    hx = {"HX-Request": "true", "HX-Target": "history"}
    url = f"{BASE}/webhooks/{webhook.id}"
    first = (await client.get(url, headers=hx)).text
    assert first.count('data-testid="delivery-row"') == 50 and 'hx-trigger="every 2s"' in first
    older = re.search(r'data-testid="older"[^>]*|href="([^"]*cursor=[^"]*)"', first)
    cursor = re.search(r"cursor=([\w-]+)", first).group(1)
    second = (await client.get(url, params={"cursor": cursor}, headers=hx)).text
    assert second.count('data-testid="delivery-row"') == 50 and 'hx-trigger="every 2s"' not in second
    ids_first = set(re.findall(r'data-delivery-id="([\w-]+)"', first))
    ids_second = set(re.findall(r'data-delivery-id="([\w-]+)"', second))
    assert older and not ids_first & ids_second
    dead = (await client.get(url, params={"status": "dlq"}, headers=hx)).text
    assert 'data-testid="delivery-row"' in dead and "success</span>" not in dead
    typed = (await client.get(url, params={"event_type": "job.closed"}, headers=hx)).text
    assert re.findall(r"<code>([\w.]+)</code></a>", typed) and set(re.findall(r"<code>([\w.]+)</code></a>", typed)) == {
        "job.closed"
    }
    async with db.connection() as conn:
        row = await conn.fetchrow(
            "SELECT id, event_id FROM webhook_deliveries WHERE webhook_id = $1 LIMIT 1", webhook.id
        )
    for value in (row["id"], row["event_id"]):
        found = (await client.get(url, params={"q": str(value)}, headers=hx)).text
        assert re.findall(r'data-delivery-id="([\w-]+)"', found) == [str(row["id"])]
    bad = (await client.get(url, params={"q": "not-an-id"}, headers=hx)).text
    assert "Search by a delivery id or an event id" in bad


async def test_inspector_shows_payload_attempts_and_a_curl_that_reproduces_the_request(
    client, api, receiver, worker_process, scheduler, factory
):
    receiver.then(Answer(status=500, body=b"x" * (70 * 1024)))
    hook = await api.webhook(receiver.url, headers={"X-Partner": "acme"})
    event_id = await api.publish("job.created", {"title": "Nurse"})
    row = await settled(event_id, hook["id"], "success")
    admin = await factory.user(org=api.organisation)
    await sign_in(client, admin)
    panel = (
        await client.get(f"{BASE}/webhooks/{hook['id']}/deliveries/{row['id']}", headers={"HX-Request": "true"})
    ).text
    import html as html_module

    assert '"title": "Nurse"' in html_module.unescape(panel)
    assert panel.count('data-testid="attempt"') == 2
    assert "(truncated at 64 KiB)" in panel and "HTTP 500" in panel and "then waited 200 ms" in panel
    curl = re.search(r'data-testid="curl">(.*?)</textarea>', panel, re.S).group(1)
    words = shlex.split(html_module.unescape(curl))
    assert words[:4] == ["curl", "-X", "POST", receiver.url]
    body = words[words.index("--data-binary") + 1]
    assert body.encode() == receiver.log[-1].body  # exactly the bytes that were sent
    assert "X-Partner: acme" in words and any(w.startswith("webhook-signature: v1,") for w in words)
    # Without JavaScript the same inspector is a page of its own
    assert (await client.get(f"{BASE}/webhooks/{hook['id']}/deliveries/{row['id']}")).status_code == 200


async def test_replay_from_the_history_updates_the_row_in_place(
    client, api, receiver, worker_process, scheduler, factory
):
    hook = await api.webhook(receiver.url)
    event_id = await api.publish()
    row = await settled(event_id, hook["id"], "success")
    admin = await factory.user(org=api.organisation)
    await sign_in(client, admin)
    answer = await client.post(
        f"/employee/admin/integrations/deliveries/{row['id']}/replay",
        data={"row": "1"},
        headers=csrf_headers(client) | {"HX-Request": "true"},
    )
    # The row itself comes back, in whatever state the new attempt has reached by then (a fast worker
    # may already have sent it).
    assert answer.text.strip().startswith(f'<tr data-testid="delivery-row" data-delivery-id="{row["id"]}"')
    assert re.search(r'data-testid="delivery-status">(pending|processing|success)', answer.text)
    await receiver.wait_for(2)

    async def two_attempts():
        found = await settled(event_id, hook["id"], "success")
        return found if found["attempt_count"] == 2 else None

    await wait_until(two_attempts)


async def test_replay_all_failed_since_runs_as_a_job(client, api, receiver, worker_process, scheduler, factory):
    receiver.default = Answer(status=400)
    hook = await api.webhook(receiver.url)
    events = [await api.publish() for _ in range(3)]
    for event_id in events:
        await settled(event_id, hook["id"], "dlq")
    receiver.default = Answer(status=200)
    admin = await factory.user(org=api.organisation)
    await sign_in(client, admin)
    widget = await client.post(
        f"{BASE}/webhooks/{hook['id']}/replay-failed",
        data={"since": "2000-01-01T00:00"},
        headers=csrf_headers(client) | {"HX-Request": "true"},
    )
    assert widget.status_code == 202 and "Replaying" in widget.text and "<progress" in widget.text
    for event_id in events:
        await settled(event_id, hook["id"], "success")
    missing = await client.post(
        f"{BASE}/webhooks/{hook['id']}/replay-failed",
        data={"since": ""},
        headers=csrf_headers(client) | {"HX-Request": "true"},
    )
    assert missing.status_code == 400


async def test_viewers_and_other_organisations_cannot_replay_or_inspect(client, seeded, factory):
    admin, webhook = seeded
    async with db.connection() as conn:
        delivery_id = await conn.fetchval("SELECT id FROM webhook_deliveries WHERE webhook_id = $1 LIMIT 1", webhook.id)
    viewer = await factory.user(org=admin.org, role="viewer")
    await sign_in(client, viewer)
    page = (await client.get(f"{BASE}/webhooks/{webhook.id}")).text
    assert 'data-testid="replay"' not in page and 'data-testid="replay-failed"' not in page
    assert (
        await client.post(f"{BASE}/deliveries/{delivery_id}/replay", data={"row": "1"}, headers=csrf_headers(client))
    ).status_code == 403
    _, read_token = await factory.token(admin.org, scopes="webhooks:read")
    assert (
        await client.post(f"/api/v1/deliveries/{delivery_id}/replay", headers=bearer(read_token))
    ).status_code == 403
    client.cookies.clear()
    await sign_in(client, await factory.user())
    assert (await client.get(f"{BASE}/webhooks/{webhook.id}/deliveries/{delivery_id}")).status_code == 404
    assert (await client.get(f"{BASE}/webhooks/{webhook.id}")).status_code == 404
    other_webhook, _ = await services.create_webhook(
        admin.org.id, {"name": "Other", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    client.cookies.clear()
    await sign_in(client, admin)
    # A delivery is only inspected under its own webhook
    assert (await client.get(f"{BASE}/webhooks/{other_webhook.id}/deliveries/{delivery_id}")).status_code == 404
    assert (await client.get(f"{BASE}/webhooks/{uuid.uuid4()}")).status_code == 404


async def test_figures_of_a_webhook_deleted_meanwhile_do_not_hold_back_the_others(api):
    """Attempts are counted in the process and written once a second; an organisation deleted in between
    takes its webhooks with it, and its counts must not make every later flush fail."""
    from datetime import UTC, datetime

    hook = await api.webhook("http://127.0.0.1:9/hook")
    now = datetime.now(UTC)
    stats.record_attempt(uuid.uuid4(), now, success=True, first=True, duration_ms=12)  # a webhook that is gone
    stats.record_attempt(uuid.UUID(hook["id"]), now, success=False, first=True, duration_ms=40)
    await stats.flush()
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT webhook_id, attempts, failures FROM webhook_stats_hourly")
    assert [(str(r["webhook_id"]), r["attempts"], r["failures"]) for r in rows] == [(hook["id"], 1, 1)]
    assert await stats.flush() == 0  # nothing kept back to fail again
