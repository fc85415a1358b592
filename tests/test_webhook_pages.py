"""The webhook, retry-config and DLQ pages through the test client, with real rows."""

from __future__ import annotations

import re

from app.webhooks import retry_config, services
from app.webhooks.tables import RetryPolicy, Webhook
from tests.factories import csrf_headers, sign_in

BASE = "/employee/admin/integrations"


def form(client, **fields) -> dict:
    return {"_csrf_token": client.cookies.get("intime_csrf")} | fields


async def test_admin_creates_a_webhook_in_the_form_and_sees_the_secret_once(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    assert (await client.get(f"{BASE}/webhooks/new")).status_code == 200
    created = await client.post(
        f"{BASE}/webhooks/new",
        data=form(
            client,
            name="ATS",
            url="http://127.0.0.1:9/hook",
            event_patterns="job.*, recruiting.*",
            enabled="on",
            timeout_seconds="10",
            headers="Authorization: Bearer abc\nX-Team: ops",
            description="",
        ),
    )
    assert created.status_code == 201, created.text
    secret = re.search(r'data-testid="secret"\s*value="(whsec_[^"]+)"|value="(whsec_[^"]+)"', created.text)
    assert secret
    row = await Webhook.objects().first()
    assert row.event_patterns == ["job.*", "recruiting.*"] and row.timeout_seconds == 10
    page = (await client.get(f"{BASE}/webhooks")).text
    assert "ATS" in page and "whsec_" not in page


async def test_bad_form_input_is_explained_beside_each_field_and_nothing_is_saved(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    response = await client.post(
        f"{BASE}/webhooks/new",
        data=form(
            client,
            name="",
            url="http://user:pw@10.0.0.1/x",
            event_patterns="jobz.*",
            timeout_seconds="0",
            headers="no colon here",
            policy_override="on",
            policy_strategy="fixed",
            policy_base_delay_ms="900",
            policy_max_delay_ms="100",
            policy_max_retries="3",
        ),
    )
    assert response.status_code == 422
    text = response.text
    assert 'id="headers-error"' in text and "Name: value" in text
    # The form keeps what was typed
    assert 'value="jobz.*"' in text
    assert await Webhook.count() == 0
    response = await client.post(
        f"{BASE}/webhooks/new",
        data=form(
            client,
            name="",
            url="http://user:pw@10.0.0.1/x",
            event_patterns="jobz.*",
            timeout_seconds="0",
            policy_override="on",
            policy_strategy="fixed",
            policy_base_delay_ms="900",
            policy_max_delay_ms="100",
            policy_max_retries="3",
        ),
    )
    text = response.text
    for field in ("name", "url", "event_patterns", "timeout_seconds", "retry_policy-max_delay_ms"):
        assert f'id="{field}-error"' in text, field
    assert "matches no event type" in text and "less than the base delay" in text


async def test_pattern_preview_lists_what_a_pattern_matches(client, factory):
    await sign_in(client, await factory.user())
    response = await client.post(
        f"{BASE}/webhooks/patterns-preview",
        data={"event_patterns": "placement.*"},
        headers=csrf_headers(client) | {"HX-Request": "true"},
    )
    assert "placement.created" in response.text and "placement.ended" in response.text
    assert "job.created" not in response.text
    response = await client.post(
        f"{BASE}/webhooks/patterns-preview",
        data={"event_patterns": "nope.*"},
        headers=csrf_headers(client) | {"HX-Request": "true"},
    )
    assert "matches no event type" in response.text


async def test_viewer_reads_but_cannot_change_webhooks(client, factory):
    admin = await factory.user()
    viewer = await factory.user(org=admin.org, role="viewer")
    webhook, _ = await services.create_webhook(
        admin.org.id, {"name": "Hook", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await sign_in(client, viewer)
    listing = await client.get(f"{BASE}/webhooks")
    assert "Hook" in listing.text and "New webhook" not in listing.text
    detail = await client.get(f"{BASE}/webhooks/{webhook.id}")
    assert detail.status_code == 200 and "Send test event" not in detail.text
    for path in (
        f"/webhooks/{webhook.id}/edit",
        f"/webhooks/{webhook.id}/delete",
        f"/webhooks/{webhook.id}/enabled",
        f"/webhooks/{webhook.id}/rotate-secret",
        f"/webhooks/{webhook.id}/test",
        "/webhooks/new",
    ):
        response = await client.post(BASE + path, data=form(client, enabled="false"))
        assert response.status_code == 403, path
    assert (await Webhook.objects().get(Webhook.id == webhook.id)).enabled


async def test_other_organisations_webhook_pages_are_not_found(client, factory):
    owner = await factory.user()
    webhook, _ = await services.create_webhook(
        owner.org.id, {"name": "Theirs", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await sign_in(client, await factory.user())
    assert (await client.get(f"{BASE}/webhooks/{webhook.id}")).status_code == 404
    assert (await client.get(f"{BASE}/webhooks/{webhook.id}/edit")).status_code == 404
    assert (await client.post(f"{BASE}/webhooks/{webhook.id}/delete", data=form(client))).status_code == 404
    assert "Theirs" not in (await client.get(f"{BASE}/webhooks")).text
    assert (await Webhook.objects().get(Webhook.id == webhook.id)).deleted_at is None


async def test_admin_disables_and_deletes_with_the_buttons(client, factory):
    admin = await factory.user()
    webhook, _ = await services.create_webhook(
        admin.org.id, {"name": "Hook", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await sign_in(client, admin)
    await client.post(f"{BASE}/webhooks/{webhook.id}/enabled", data=form(client, enabled="false"))
    row = await Webhook.objects().get(Webhook.id == webhook.id)
    assert not row.enabled and row.disabled_reason == "disabled by an admin"
    assert "disabled by an admin" in (await client.get(f"{BASE}/webhooks/{webhook.id}")).text
    await client.post(f"{BASE}/webhooks/{webhook.id}/delete", data=form(client))
    assert "Hook" not in (await client.get(f"{BASE}/webhooks")).text


async def test_retry_config_page_previews_saves_and_refuses(client, factory):
    admin = await factory.user()
    await sign_in(client, admin)
    page = await client.get(f"{BASE}/retry-config")
    assert page.status_code == 200 and 'data-testid="retry-preview"' in page.text
    preview = await client.post(
        f"{BASE}/retry-config/preview",
        headers=csrf_headers(client) | {"HX-Request": "true"},
        data={"strategy": "exponential", "base_delay_ms": "1000", "max_delay_ms": "8000", "max_retries": "5"},
    )
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td>", preview.text)
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0][1] == "1 s" and rows[4][1] == "8 s"  # 16 s capped at the 8 s maximum
    bad = await client.post(
        f"{BASE}/retry-config",
        data=form(client, strategy="fixed", base_delay_ms="-5", max_delay_ms="10", max_retries="60"),
    )
    assert bad.status_code == 422
    assert "cannot be negative" in bad.text and "at most 50" in bad.text
    assert await RetryPolicy.count() == 0
    saved = await client.post(
        f"{BASE}/retry-config",
        data=form(client, strategy="linear", base_delay_ms="2000", max_delay_ms="20000", max_retries="6", jitter="on"),
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    policy = await retry_config.org_policy(admin.org.id)
    assert (policy.strategy, policy.base_delay_ms, policy.max_retries, policy.jitter) == ("linear", 2000, 6, True)


async def test_a_hostile_webhook_name_stays_text_in_the_delete_confirmation(client, factory):
    admin = await factory.user()
    evil = "x');alert(document.cookie);('"
    webhook, _ = await services.create_webhook(
        admin.org.id, {"name": evil, "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await sign_in(client, admin)
    page = (await client.get(f"{BASE}/webhooks/{webhook.id}/edit")).text
    # No value of ours ends up inside JavaScript: every handler is a fixed string
    handlers = re.findall(r'\son[a-z]+="([^"]*)"', page)
    assert handlers and all("alert" not in handler for handler in handlers)
    assert "return confirm(this.dataset.confirm)" in handlers


async def test_back_field_cannot_redirect_off_site(client, factory):
    admin = await factory.user()
    webhook, _ = await services.create_webhook(
        admin.org.id, {"name": "h", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await sign_in(client, admin)
    response = await client.post(
        f"{BASE}/webhooks/{webhook.id}/enabled", data=form(client, enabled="false", back="//evil.example/x")
    )
    assert response.status_code in (302, 303) and response.headers["location"] == f"{BASE}/webhooks"


async def test_unknown_status_filter_on_the_webhook_page_shows_everything(client, factory):
    admin = await factory.user()
    webhook, _ = await services.create_webhook(
        admin.org.id, {"name": "h", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await sign_in(client, admin)
    assert (await client.get(f"{BASE}/webhooks/{webhook.id}", params={"status": "bogus"})).status_code == 200


async def test_dlq_page_actions_on_another_organisations_items_are_not_found(client, factory):
    from app.events import services as events
    from app.webhooks import bulk, dlq, fanout

    owner = await factory.user()
    webhook, _ = await services.create_webhook(
        owner.org.id, {"name": "h", "url": "http://127.0.0.1:9/", "event_patterns": ["*"]}
    )
    await events.publish(owner.org.id, "job.created", {})
    (delivery_id,) = (await fanout.fan_out_backlog())[1]
    await services.set_enabled(owner.org.id, webhook.id, False)
    job_id = await bulk.start_bulk(owner.org.id, "dlq_clear", dlq.DlqFilter(), None)
    await sign_in(client, await factory.user())
    assert (await client.post(f"{BASE}/deliveries/{delivery_id}/replay", data=form(client))).status_code == 404
    assert (await client.post(f"{BASE}/dlq/{delivery_id}/clear", data=form(client))).status_code == 404
    assert (await client.get(f"{BASE}/jobs/{job_id}")).status_code == 404
    assert 'data-testid="dlq-row"' not in (await client.get(f"{BASE}/dlq")).text
