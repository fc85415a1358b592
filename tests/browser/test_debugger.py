"""The debugger in Chromium: a delivery fails, is retried and succeeds before the admin's eyes, is
inspected attempt by attempt, and is replayed."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from app.events import services as events
from app.webhooks import services
from tests.browser.conftest import ARTIFACTS
from tests.browser.pages import LoginPage
from tests.factories import PASSWORD
from tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")


async def test_watch_a_delivery_fail_then_succeed_inspect_and_replay(page, factory, receiver):
    admin = await factory.user(role="admin")
    receiver.then(Answer(status=503, body=b"upstream busy"))
    webhook, _ = await services.create_webhook(
        admin.org.id,
        {
            "name": "Partner",
            "url": receiver.url,
            "event_patterns": ["placement.*"],
            "retry_policy": {
                "strategy": "fixed",
                "base_delay_ms": 4000,
                "max_delay_ms": 4000,
                "max_retries": 3,
                "jitter": False,
            },
        },
    )
    await (await LoginPage(page).open()).sign_in(admin.user.email, PASSWORD)
    await page.goto(f"/employee/admin/integrations/webhooks/{webhook.id}")
    await expect(page.get_by_test_id("no-deliveries")).to_be_visible()

    # The event's row appears and goes failed -> success, without a reload
    await events.publish(admin.org.id, "placement.created", {"placement_id": "p-7"})
    row = page.get_by_test_id("delivery-row").first
    await expect(row.get_by_test_id("delivery-status")).to_have_text("failed", timeout=10_000)
    await expect(row.get_by_test_id("delivery-status")).to_have_text("success", timeout=15_000)
    await expect(row.get_by_test_id("delivery-attempts")).to_have_text("2")

    # The inspector shows both attempts, the failed one with its answer
    await row.get_by_test_id("inspect").click()
    inspector = page.get_by_test_id("inspector")
    await expect(inspector.get_by_test_id("attempt")).to_have_count(2)
    await expect(inspector).to_contain_text("HTTP 503")
    await expect(inspector).to_contain_text('"placement_id": "p-7"')
    await page.screenshot(path=str(ARTIFACTS / "debugger.png"), full_page=True)

    # Replay: the row turns pending in place, then a third attempt is recorded
    await row.get_by_test_id("replay").click()
    await receiver.wait_for(3)
    row = page.get_by_test_id("delivery-row").first
    await expect(row.get_by_test_id("delivery-attempts")).to_have_text("3", timeout=10_000)
    await row.get_by_test_id("inspect").click()
    await expect(page.get_by_test_id("inspector").get_by_test_id("attempt")).to_have_count(3)
    await expect(page.get_by_test_id("inspector")).to_contain_text("manual")
