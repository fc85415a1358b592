"""A person in headless Chromium: sign in, see the overview, watch an event appear, make a token."""

from __future__ import annotations

import re

from playwright.async_api import expect

from app.events import services as events
from tests.browser.conftest import ARTIFACTS
from tests.browser.pages import LoginPage, OverviewPage, TokensPage
from tests.factories import PASSWORD


async def test_sign_in_and_see_the_overview_update_live(page, factory):
    person = await factory.user(role="admin")
    login = await LoginPage(page).open()

    await login.sign_in(person.user.email, "wrong password!")
    await expect(login.error).to_have_text("The e-mail or password is not right.")

    await login.sign_in(person.user.email, PASSWORD)
    overview = OverviewPage(page)
    await expect(overview.heading).to_have_text("Overview")
    await expect(page).to_have_url(re.compile(r"/employee/admin/integrations$"))
    await expect(overview.role).to_have_text("admin")
    nav = overview.navigation
    for label in ("Overview", "Event catalog", "API tokens"):
        await expect(nav.get_by_role("link", name=label)).to_be_visible()
    await expect(nav.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    await expect(overview.events_stat).to_contain_text("0")

    # An event published elsewhere appears without a reload (the fragment polls every 5 s)
    event_id = await events.publish(person.org.id, "placement.created", {"placement_id": "p-1"})
    await expect(overview.recent_events).to_contain_text(str(event_id), timeout=12_000)
    await page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)


async def test_admin_creates_a_token_in_the_page_and_sees_it_once(page, factory):
    person = await factory.user(role="admin")
    await (await LoginPage(page).open()).sign_in(person.user.email, PASSWORD)
    await OverviewPage(page).navigation.get_by_role("link", name="API tokens").click()
    token = await TokensPage(page).create("Payroll export", ["events:write"])
    assert token.startswith("itk_")
    await expect(page.get_by_test_id("token-table")).to_contain_text("Payroll export")
    await page.reload()
    await expect(page.get_by_test_id("token-created")).to_have_count(0)
    await expect(page.get_by_text(token)).to_have_count(0)


async def test_on_a_phone_the_navigation_stays_usable(page, factory):
    person = await factory.user(role="viewer")
    await page.set_viewport_size({"width": 390, "height": 800})
    await (await LoginPage(page).open()).sign_in(person.user.email, PASSWORD)
    overview = OverviewPage(page)
    await expect(overview.role).to_have_text("viewer")
    await expect(overview.navigation.get_by_role("link", name="Event catalog")).to_be_visible()
    await overview.navigation.get_by_role("link", name="Event catalog").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Event catalog")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
