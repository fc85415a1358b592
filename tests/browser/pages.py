"""Page objects: what a person sees and does, by data-testid and accessible names."""

from __future__ import annotations

from playwright.async_api import Page


class LoginPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    async def open(self) -> LoginPage:
        await self.page.goto("/login")
        return self

    async def sign_in(self, email: str, password: str) -> None:
        await self.page.get_by_label("E-mail").fill(email)
        await self.page.get_by_label("Password").fill(password)
        await self.page.get_by_test_id("login-submit").click()

    @property
    def error(self):
        return self.page.get_by_test_id("login-error")


class OverviewPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    @property
    def heading(self):
        return self.page.get_by_role("heading", level=1)

    @property
    def navigation(self):
        return self.page.get_by_role("navigation", name="Integrations")

    @property
    def events_stat(self):
        return self.page.get_by_test_id("stat-events")

    @property
    def recent_events(self):
        return self.page.get_by_test_id("recent-events")

    @property
    def role(self):
        return self.page.get_by_test_id("role")


class TokensPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    async def create(self, name: str, scopes: list[str]) -> str:
        await self.page.get_by_label("Name").fill(name)
        for scope in scopes:
            await self.page.locator(f'input[name="scopes"][value="{scope}"]').check()
        await self.page.get_by_test_id("token-submit").click()
        return await self.page.get_by_test_id("new-token").input_value()


class WebhookFormPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    async def create(self, name: str, url: str, patterns: str, fast_retries: bool = True) -> str:
        await self.page.get_by_label("Name").fill(name)
        await self.page.get_by_label("Endpoint URL").fill(url)
        await self.page.get_by_label("Events").fill(patterns)
        await self.page.get_by_label("Timeout (seconds)").fill("5")
        if fast_retries:
            await self.page.get_by_test_id("policy-override").check()
            await self.page.locator('select[name="policy_strategy"]').select_option("fixed")
            await self.page.locator('input[name="policy_base_delay_ms"]').fill("300")
            await self.page.locator('input[name="policy_max_delay_ms"]').fill("300")
            await self.page.locator('input[name="policy_max_retries"]').fill("1")
        await self.page.get_by_test_id("save-webhook").click()
        return await self.page.get_by_test_id("secret").input_value()


class WebhookDetailPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    @property
    def rows(self):
        return self.page.get_by_test_id("delivery-row")

    def statuses(self):
        return self.page.get_by_test_id("delivery-status")


class OAuthPanelPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    def provider(self, key: str):
        return self.page.get_by_test_id(f"provider-{key}")

    async def connect(self, key: str) -> None:
        await self.provider(key).get_by_test_id(f"connect-{key}").click()

    @property
    def flashes(self):
        return self.page.get_by_test_id("oauth-flash")

    @property
    def table(self):
        return self.page.get_by_test_id("connection-table")

    def rows(self, provider: str | None = None):
        rows = self.page.get_by_test_id("connection-row")
        return rows.and_(self.page.locator(f'[data-provider="{provider}"]')) if provider else rows

    async def disconnect(self, row) -> str:
        """Press Disconnect and accept the browser's confirm(); returns the question it asked."""
        asked: list[str] = []

        async def accept(dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        self.page.once("dialog", accept)
        await row.get_by_test_id("disconnect").click()
        return asked[0] if asked else ""


class SandboxConsentPage:
    """The Sandbox provider's own consent page (devtools/sandbox.py), not one of ours."""

    def __init__(self, page: Page) -> None:
        self.page = page

    @property
    def title(self):
        return self.page.get_by_test_id("consent-title")

    @property
    def scopes(self):
        return self.page.get_by_test_id("consent-scopes")

    async def allow(self) -> None:
        await self.page.get_by_test_id("allow").click()

    async def deny(self) -> None:
        await self.page.get_by_test_id("deny").click()


class IntegrationPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    @property
    def active_provider(self):
        return self.page.get_by_test_id("failover-panel").get_by_test_id("active-provider")

    def circuit(self, provider: str):
        return self.page.locator(f'[data-testid="provider-row"][data-provider="{provider}"]').get_by_test_id("circuit")

    @property
    def audit(self):
        return self.page.get_by_test_id("audit-trail")


class RetentionPage:
    def __init__(self, page: Page) -> None:
        self.page = page

    def row(self, kind: str):
        return self.page.locator(f'[data-testid="kind-row"][data-kind="{kind}"]')

    def field(self, label: str):
        return self.page.get_by_label(f"{label} (days)")

    def error(self, kind: str):
        return self.page.locator(f"#{kind}-error")

    @property
    def form_controls(self):
        """Inputs and buttons in the page's content (the header's sign-out button is not the page's)."""
        return self.page.locator("main").locator("input:not([type=hidden]), button, select, textarea")

    async def save(self) -> None:
        await self.page.get_by_test_id("save-retention").click()
