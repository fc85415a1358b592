"""An admin in Chromium connects the organisation to the run's Sandbox OAuth provider (a real Authlib
authorization server on 127.0.0.1), grants access on its consent page, comes back to the panel, and
disconnects again.

The live server sets INTIME_BASE_URL to its own port, so the redirect URI the app registers with the
provider leads the browser back to this web process; the Sandbox accepts any loopback redirect URI.
"""

from __future__ import annotations

import re

from playwright.async_api import expect

from app.oauth import clients
from tests.browser.conftest import ARTIFACTS
from tests.browser.pages import LoginPage, OAuthPanelPage, OverviewPage, SandboxConsentPage
from tests.conftest import SANDBOX_SECRET
from tests.factories import PASSWORD


async def test_admin_connects_the_sandbox_grants_access_and_disconnects(page, factory, sandbox, live_server):
    # Given an admin whose organisation has its Sandbox client set up
    admin = await factory.user(role="admin")
    await clients.save_client(admin.org.id, "sandbox", {"client_id": "intime-test", "client_secret": SANDBOX_SECRET})
    await (await LoginPage(page).open()).sign_in(admin.user.email, PASSWORD)
    await OverviewPage(page).navigation.get_by_role("link", name="OAuth").click()
    panel = OAuthPanelPage(page)
    await expect(page.get_by_role("heading", level=1)).to_have_text("OAuth connections")
    sandbox_card = panel.provider("sandbox")
    await expect(sandbox_card).to_contain_text("Sandbox (development)")
    await expect(sandbox_card).to_contain_text("intime-test")
    await expect(sandbox_card).to_contain_text(f"{live_server}/oauth/sandbox/callback")
    await expect(panel.rows()).to_have_count(0)

    # When they press Connect, they are at the provider's consent page
    await panel.connect("sandbox")
    await expect(page).to_have_url(re.compile("^" + re.escape(sandbox.url) + r"/authorize\?"))
    consent = SandboxConsentPage(page)
    await expect(consent.title).to_have_text("InTime (dev) wants to use your Sandbox account")
    await expect(consent.scopes).to_contain_text("offline_access")

    # And pressing Allow brings them back to the panel, connected
    await consent.allow()
    await expect(page).to_have_url(f"{live_server}/employee/admin/integrations/oauth")
    await expect(panel.flashes).to_have_text(["Connected Sandbox (development) as ada@sandbox.test."])
    row = panel.rows("sandbox")
    await expect(row).to_have_count(1)
    await expect(row.get_by_test_id("connection-account")).to_have_text("ada@sandbox.test")
    await expect(row).to_contain_text("Sandbox (development)")
    await expect(row.get_by_test_id("connection-status")).to_have_text("active")
    await page.screenshot(path=str(ARTIFACTS / "oauth.png"), full_page=True)

    # On a phone the panel does not scroll sideways (the table scrolls inside its card)
    await page.set_viewport_size({"width": 390, "height": 800})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the OAuth panel scrolls sideways on a phone ({width}px)"
    await page.set_viewport_size({"width": 1280, "height": 800})

    # When they disconnect and confirm, the tokens are revoked at the provider and the row is gone
    revocations = (await sandbox.stats())["revocations"]  # the provider is shared by the whole run
    question = await panel.disconnect(row)
    assert question.startswith("Disconnect “ada@sandbox.test”?"), question
    await expect(panel.flashes).to_have_text(
        ["Disconnected ada@sandbox.test: revoked at the provider (refresh token) and deleted."]
    )
    await expect(panel.rows()).to_have_count(0)
    await expect(panel.table).to_have_count(0)
    assert (await sandbox.stats())["revocations"] > revocations  # the grant, and with it the access token
