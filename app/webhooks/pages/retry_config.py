"""The organisation's retry policy page, with a live preview of the schedule it gives."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.plugins.htmx import HTMXTemplate
from litestar.response import Template

from app.accounts.auth import admin_only, principal_of
from app.webhooks import retry, retry_config

POLICY_FIELDS = ("strategy", "base_delay_ms", "max_delay_ms", "max_retries", "jitter")


class RetryConfigPage(Controller):
    path = "/retry-config"
    include_in_schema = False

    @get("/", name="retry:config")
    async def page(self, request: Request) -> Template:
        policy = await retry_config.org_policy(principal_of(request).org_id)
        return Template("webhooks/retry_config.html", context=_policy_context(policy.as_dict(), {}))

    @post("/", name="retry:save", guards=[admin_only], status_code=200)
    async def save(self, request: Request) -> Template:
        values = _policy_form(await request.form())
        try:
            policy = await retry_config.set_org_policy(principal_of(request).org_id, values)
        except retry.PolicyError as error:
            return Template(
                "webhooks/retry_config.html", context=_policy_context(values, error.errors), status_code=422
            )
        return Template("webhooks/retry_config.html", context=_policy_context(policy.as_dict(), {}) | {"saved": True})

    @post("/preview", name="retry:preview")
    async def preview(self, request: Request) -> Template:
        values = _policy_form(await request.form())
        return HTMXTemplate(template_name="webhooks/partials/retry_preview.html", context=_policy_context(values, {}))


def _policy_form(form: FormMultiDict) -> dict[str, Any]:
    return {f: str(form.get(f, "")) for f in POLICY_FIELDS if f != "jitter"} | {"jitter": form.get("jitter") == "on"}


def _policy_context(values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    try:
        policy = retry.parse_policy(values)
        preview, preview_errors = retry.schedule(policy), {}
    except retry.PolicyError as error:
        preview, preview_errors = [], error.errors
    return {
        "values": values,
        "errors": errors or preview_errors,
        "preview": preview,
        "human": retry.human_ms,
        "strategies": retry.STRATEGIES,
    }
