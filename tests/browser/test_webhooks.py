"""An admin in Chromium: create a webhook to a local receiver, watch signed events arrive, see a
failing one retried on schedule and dead-lettered, then retry it from the DLQ once the receiver works."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from playwright.async_api import expect

from app.events import services as events
from tests.browser.conftest import ARTIFACTS
from tests.browser.pages import LoginPage, OverviewPage, WebhookDetailPage, WebhookFormPage
from tests.factories import PASSWORD
from tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("worker_process", "scheduler")


async def test_webhook_lifecycle_in_the_browser(page, factory, receiver):
    admin = await factory.user(role="admin")
    await (await LoginPage(page).open()).sign_in(admin.user.email, PASSWORD)
    await OverviewPage(page).navigation.get_by_role("link", name="Webhooks").click()
    await page.get_by_test_id("new-webhook").click()

    # A pattern shows what it matches as it is typed
    await page.get_by_label("Events").fill("placement.*")
    await expect(page.get_by_test_id("pattern-preview")).to_contain_text("placement.created")

    secret = await WebhookFormPage(page).create("Partner ATS", receiver.url, "job.*")
    assert secret.startswith("whsec_")
    await page.get_by_test_id("to-webhook").click()
    detail = WebhookDetailPage(page)

    # An event arrives signed, and its row turns to success without a reload
    await events.publish(admin.org.id, "job.created", {"title": "Welder"})
    (request,) = await receiver.wait_for(1)
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-intime-signature"] == expected
    assert json.loads(request.body)["data"] == {"title": "Welder"}
    await expect(detail.statuses().first).to_have_text("success", timeout=10_000)

    # A failing receiver: retried once on schedule, then dead-lettered, shown live
    receiver.default = Answer(status=503)
    await events.publish(admin.org.id, "job.closed", {})
    await receiver.wait_for(3)
    await expect(detail.statuses().first).to_have_text("dlq", timeout=10_000)
    await expect(detail.rows.first.get_by_test_id("delivery-attempts")).to_have_text("2")
    await page.screenshot(path=str(ARTIFACTS / "webhook-detail.png"), full_page=True)

    # Fixed receiver, retried from the DLQ page
    receiver.default = Answer(status=200)
    await OverviewPage(page).navigation.get_by_role("link", name="Dead-letter queue").click()
    await expect(page.get_by_test_id("dlq-row")).to_have_count(1)
    await page.screenshot(path=str(ARTIFACTS / "dlq.png"), full_page=True)
    await page.get_by_test_id("dlq-retry").click()
    await expect(page.get_by_text("Queued: a new attempt is on its way.")).to_be_visible()
    await receiver.wait_for(4)
    await page.reload()
    await expect(page.get_by_test_id("dlq-empty")).to_be_visible()


async def test_retry_config_preview_updates_as_the_admin_types(page, factory):
    admin = await factory.user(role="admin")
    await (await LoginPage(page).open()).sign_in(admin.user.email, PASSWORD)
    await OverviewPage(page).navigation.get_by_role("link", name="Retry config").click()
    preview = page.get_by_test_id("retry-preview")
    await page.get_by_label("Strategy").select_option("fixed")
    await page.get_by_label("Base delay (ms)").fill("2000")
    await page.get_by_label("Max delay (ms)").fill("2000")
    await page.get_by_label("Max retries").fill("3")
    await page.get_by_label("Jitter").uncheck()
    await expect(preview.locator("tbody tr")).to_have_count(3)
    await expect(preview).to_contain_text("6 s")
    await page.get_by_label("Max delay (ms)").fill("100")
    await expect(preview).to_contain_text("less than the base delay")
    await page.get_by_label("Max delay (ms)").fill("4000")
    await page.get_by_test_id("save-policy").click()
    await expect(page.get_by_test_id("saved")).to_be_visible()
    await page.screenshot(path=str(ARTIFACTS / "retry-config.png"), full_page=True)
