"""The retention page in Chromium: an admin reads what each kind of record keeps and changes it (with
htmx, and without JavaScript); a viewer only reads; pruning shows once it has run; a phone fits it."""

from __future__ import annotations

import re

from playwright.async_api import expect

from app.core import db
from app.lifecycle import retention
from tests.browser.conftest import ARTIFACTS
from tests.browser.pages import LoginPage, OverviewPage, RetentionPage
from tests.factories import PASSWORD

URL = "/employee/admin/integrations/retention"
HUGE = "9" * 5000


async def _open(page, person) -> RetentionPage:
    await (await LoginPage(page).open()).sign_in(person.user.email, PASSWORD)
    await OverviewPage(page).navigation.get_by_role("link", name="Retention").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Retention")
    return RetentionPage(page)


async def _pruned(kind: str, minutes_ago: int, last: int, total: int, error: str | None = None) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO prune_state (kind, last_run_at, last_removed, total_removed, last_error) "
            "VALUES ($1, now() - make_interval(mins => $2), $3, $4, $5)",
            kind,
            minutes_ago,
            last,
            total,
            error,
        )


def _posts(page) -> list[str]:
    """The POST requests the page makes from now on."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if request.method == "POST" else None)
    return seen


async def test_an_admin_sees_every_kind_and_changes_one_with_field_errors_first(page, factory):
    admin = await factory.user(role="admin")
    view = await _open(page, admin)
    base = retention.default_retention()

    # Every kind, with the default that applies, the cap, what it holds now, and no pruning yet
    await expect(page.get_by_test_id("kind-row")).to_have_count(len(retention.KINDS))
    for kind in retention.KINDS:
        row = view.row(kind.name)
        await expect(row).to_contain_text(kind.label)
        await expect(row).to_contain_text(kind.what)
        await expect(row.get_by_test_id("kept-for")).to_have_text(
            f"{retention.describe(base.defaults[kind.name])} default"
        )
        await expect(row.get_by_test_id("cap")).to_have_text(retention.describe(base.caps[kind.name]))
        await expect(row.get_by_test_id("holds")).to_have_text(re.compile(r"≈ [\d,]+ rows?\s*≈ [\d.,]+ (B|kB|MB|GB)"))
        await expect(row.get_by_test_id("pruned-at")).to_have_text("not yet")
        field = view.field(kind.label)
        await expect(field).to_have_value("")
        await expect(field).to_have_attribute("placeholder", f"default: {base.defaults[kind.name] // 86400}")

    # Out of range (0, and a number of 5,000 digits): a message beside each field, what was typed kept
    answers: list[int] = []
    page.on("response", lambda response: answers.append(response.status) if response.request.method == "POST" else None)
    deliveries, events = view.field("Deliveries and their attempts"), view.field("Events")
    await deliveries.fill("0")
    await events.fill(HUGE)
    await view.save()
    await expect(page.get_by_test_id("form-errors")).to_be_visible()
    await expect(view.error("deliveries")).to_have_text(
        "Enter whole days from 1 to 90 (this installation's cap), or leave it blank."
    )
    await expect(view.error("events")).to_contain_text("from 1 to 90")
    await expect(deliveries).to_have_value("0")
    await expect(events).to_have_value(HUGE)
    await expect(events).to_have_attribute("aria-invalid", "true")
    await expect(events).to_have_attribute("aria-describedby", "events-hint events-error")
    await expect(view.error("bodies")).to_have_count(0)
    assert answers == [422]
    await expect(view.row("deliveries").get_by_test_id("kept-for")).to_have_text("30 days default")

    # A valid choice saves, says so once, and shows as chosen
    await deliveries.fill("45")
    await events.fill("")
    await view.save()
    await expect(page.get_by_test_id("flash")).to_have_text("Retention saved")
    await expect(view.row("deliveries").get_by_test_id("kept-for")).to_have_text("45 days chosen")
    await expect(view.row("events").get_by_test_id("kept-for")).to_have_text("30 days default")
    await expect(page.get_by_test_id("form-errors")).to_have_count(0)

    # Reloading reads the page again: no post, no message, the choice kept
    posts = _posts(page)
    await page.reload()
    await expect(view.row("deliveries").get_by_test_id("kept-for")).to_have_text("45 days chosen")
    await expect(view.field("Deliveries and their attempts")).to_have_value("45")
    await expect(page.get_by_test_id("flash")).to_have_count(0)
    assert posts == []

    # Once the pruner has run for a kind, when (exact time on hover) and what it removed
    await _pruned("deliveries", 5, 12, 3400)
    await _pruned("bodies", 90, 0, 7, error="canceling statement due to lock timeout")
    await page.reload()
    when = view.row("deliveries").get_by_test_id("pruned-at")
    await expect(when).to_have_text("5 min ago")
    await expect(when).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    await expect(view.row("deliveries").get_by_test_id("pruned-counts")).to_have_text(
        "removed 12 last time, 3,400 in total"
    )
    await expect(view.row("bodies").get_by_test_id("pruned-at")).to_have_text("1 h ago")
    await expect(view.row("bodies").get_by_test_id("pruned-error")).to_contain_text("lock timeout")
    await expect(view.row("events").get_by_test_id("pruned-at")).to_have_text("not yet")
    await page.screenshot(path=str(ARTIFACTS / "retention.png"), full_page=True)

    # On a phone: nothing scrolls sideways but the table inside its card
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.reload()
    await expect(view.field("Audit trails")).to_be_visible()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the retention page scrolls sideways on a phone ({width}px)"
    await page.screenshot(path=str(ARTIFACTS / "retention-phone.png"), full_page=True)


async def test_without_javascript_a_save_redirects_and_a_reload_does_not_post_again(browser, live_server, factory):
    admin = await factory.user(role="admin")
    context = await browser.new_context(base_url=live_server, java_script_enabled=False)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    try:
        view = await _open(page, admin)
        await view.field("Bulk jobs").fill(HUGE)
        await view.save()
        await expect(view.error("jobs")).to_contain_text("from 1 to 90")
        await expect(view.field("Bulk jobs")).to_have_value(HUGE)

        await view.field("Bulk jobs").fill("14")
        await view.save()
        await expect(page.get_by_test_id("flash")).to_have_text("Retention saved")
        await expect(page).to_have_url(re.compile(f"{URL}$"))
        await expect(view.row("jobs").get_by_test_id("kept-for")).to_have_text("14 days chosen")

        posts = _posts(page)
        await page.reload()
        await expect(view.row("jobs").get_by_test_id("kept-for")).to_have_text("14 days chosen")
        await expect(page.get_by_test_id("flash")).to_have_count(0)
        assert posts == []
    finally:
        await context.close()


async def test_a_viewer_reads_retention_without_form_controls_and_a_post_is_refused(page, factory):
    viewer = await factory.user(role="viewer")
    view = await _open(page, viewer)
    await expect(view.row("deliveries").get_by_test_id("kept-for")).to_have_text("30 days default")
    await expect(view.row("audit").get_by_test_id("kept-for")).to_have_text("365 days default")
    await expect(page.get_by_test_id("viewer-note")).to_have_text("Only an admin can change retention.")
    await expect(view.form_controls).to_have_count(0)

    # A post made by hand, with the session's own CSRF token, is refused all the same
    token = next(c["value"] for c in await page.context.cookies() if c["name"] == "intime_csrf")
    refused = await page.request.post(URL, form={"_csrf_token": token, "deliveries": "5"}, max_redirects=0)
    assert refused.status == 403
    await page.reload()
    await expect(view.row("deliveries").get_by_test_id("kept-for")).to_have_text("30 days default")

    await page.set_viewport_size({"width": 390, "height": 800})
    await page.reload()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the retention page scrolls sideways on a phone ({width}px)"
