"""An admin watches an integration fail over in Chromium: the primary provider (a local server) breaks,
the panel shows traffic moving to the backup without a reload; it recovers, and traffic comes back."""

from __future__ import annotations

from playwright.async_api import expect

from app.integrations import services
from tests.browser.pages import IntegrationPage, LoginPage
from tests.factories import PASSWORD
from tests.receiver import Answer, Receiver


async def test_the_panel_shows_the_failover_and_the_failback(page, factory, live_server, worker_process, scheduler):
    primary, backup = await Receiver().start(), await Receiver().start()
    try:
        admin = await factory.user(role="admin")
        integration = await services.create_integration(
            admin.org.id,
            "Email delivery",
            "email",
            health_interval_seconds=1,
            breaker_failure_threshold=2,
            breaker_cooldown_seconds=1,
            breaker_probe_successes=1,
            failback_after_seconds=2,
        )
        await services.add_provider(integration, "Primary", primary.url, primary.url, priority=1)
        await services.add_provider(integration, "Backup", backup.url, backup.url, priority=2)
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
