"""An admin watches an integration fail over in Chromium: the primary provider (a local server) breaks,
the panel shows traffic moving to the backup without a reload; it recovers, and traffic comes back."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.pages import IntegrationPage, LoginPage
from tests.factories import PASSWORD
from tests.receiver import Answer, Receiver


async def test_the_panel_shows_the_failover_and_the_failback(page, factory, live_server, worker_process, scheduler):
    primary, backup = await Receiver().start(), await Receiver().start()
    try:
        admin = await factory.user(role="admin")
        integration = await factory.integration(
            admin.org.id,
            "Email delivery",
            "email",
            health_interval_seconds=5,  # the shortest the settings allow
            breaker_failure_threshold=2,
            breaker_cooldown_seconds=10,  # longer than a check interval: the panel sees the circuit open
            breaker_probe_successes=1,
            failback_after_seconds=2,
        )
        await factory.provider(integration, "Primary", primary.url, primary.url, priority=1)
        await factory.provider(integration, "Backup", backup.url, backup.url, priority=2)
        await (await LoginPage(page).open()).sign_in(admin.user.email, PASSWORD)
        await page.goto(f"{live_server}/employee/admin/integrations/integrations/{integration}")
        panel = IntegrationPage(page)
        await expect(panel.active_provider).to_have_text("Primary")

        # The primary breaks: within a few checks the panel, refreshing itself, shows the backup active
        primary.default = Answer(status=503)
        await expect(panel.active_provider).to_have_text("Backup", timeout=20_000)
        await expect(panel.circuit("Primary")).to_have_text("open")

        # It recovers: after its probe and two healthy seconds, traffic comes back
        primary.default = Answer(status=200)
        await expect(panel.active_provider).to_have_text("Primary", timeout=30_000)
        await page.reload()
        await expect(panel.audit).to_contain_text("failover Primary → Backup (automatic)")
        await expect(panel.audit).to_contain_text("failback Backup → Primary (automatic)")
    finally:
        await primary.stop()
        await backup.stop()


async def test_an_admin_sets_up_an_integration_with_two_providers(page, factory, live_server):
    receiver = await Receiver().start()
    try:
        admin = await factory.user(role="admin")
        await (await LoginPage(page).open()).sign_in(admin.user.email, PASSWORD)
        await page.goto(f"{live_server}/employee/admin/integrations/integrations/")
        await page.get_by_test_id("new-integration").click()
        await page.get_by_label("Name").fill("SMS")
        await page.get_by_label("What it does").select_option(label="SMS")
        await page.get_by_test_id("save-integration").click()
        await expect(page.get_by_role("status")).to_contain_text("Created SMS: now add its providers.")

        for name in ("Twilio", "Vonage"):
            await page.get_by_test_id("add-provider").click()
            await page.get_by_label("Name").fill(name)
            await page.get_by_label("Endpoint URL").fill(receiver.url)
            await page.get_by_label("Health-check URL").fill(receiver.url)
            await page.get_by_label("API key or token", exact=True).fill(f"{name.lower()}-key")
            await page.get_by_label("Rate limit (calls an hour)").fill("not a number")
            await page.get_by_test_id("save-provider").click()
            # The bad field is explained beside it and the rest is kept, except the key, asked for again.
            await expect(page.get_by_test_id("form-errors")).to_be_visible()
            await expect(page.locator("#rate_limit_per_hour-error")).to_contain_text("a whole number")
            await expect(page.get_by_label("Name")).to_have_value(name)
            await page.get_by_label("Rate limit (calls an hour)").fill("600")
            await page.get_by_label("API key or token", exact=True).fill(f"{name.lower()}-key")
            await page.get_by_test_id("save-provider").click()
            await expect(page.get_by_role("status")).to_contain_text(f"Added {name}.")

        panel = IntegrationPage(page)
        await expect(panel.active_provider).to_have_text("Twilio")
        rows = page.get_by_test_id("provider-row")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(1)).to_contain_text("0 / 600 an hour")
        assert "twilio-key" not in await page.content()

        # Disabling the active provider moves traffic to the next one, and the audit trail says who.
        await rows.nth(0).get_by_test_id("toggle-provider").click()
        await expect(panel.active_provider).to_have_text("Vonage")
        await expect(panel.audit).to_contain_text(f"Twilio was disabled — {admin.user.email}")
    finally:
        await receiver.stop()
