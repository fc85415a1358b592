"""The organisation's retry policy page, with a live preview of the schedule it gives, and its
delivery rules (what counts towards auto-disable, the default cap on deliveries in flight)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.plugins.htmx import HTMXTemplate
from litestar.response import Template

from app.accounts.auth import admin_only, principal_of
from app.webhooks import delivery_settings, retry, retry_config

POLICY_FIELDS = ("strategy", "base_delay_ms", "max_delay_ms", "max_retries", "jitter")


class RetryConfigPage(Controller):
    path = "/retry-config"
    include_in_schema = False

    @get("/", name="retry:config")
    async def page(self, request: Request) -> Template:
        org_id = principal_of(request).org_id
        policy = await retry_config.org_policy(org_id)
        return Template("webhooks/retry_config.html", context=await _page_context(org_id, policy.as_dict(), {}))

    @post("/", name="retry:save", guards=[admin_only], status_code=200)
    async def save(self, request: Request) -> Template:
        org_id = principal_of(request).org_id
        values = _policy_form(await request.form())
        try:
            policy = await retry_config.set_org_policy(org_id, values)
        except retry.PolicyError as error:
            context = await _page_context(org_id, values, error.errors)
            return Template("webhooks/retry_config.html", context=context, status_code=422)
        context = await _page_context(org_id, policy.as_dict(), {}) | {"saved": True}
        return Template("webhooks/retry_config.html", context=context)

    @post("/rules", name="retry:rules", guards=[admin_only], status_code=200)
    async def save_rules(self, request: Request) -> Template:
        org_id = principal_of(request).org_id
        form = await request.form()
        data: dict[str, Any] = {"count_payload_rejections": form.get("count_payload_rejections") == "on"}
        if "max_in_flight" in form:
            data["max_in_flight"] = str(form.get("max_in_flight", ""))
        policy = await retry_config.org_policy(org_id)
        context = await _page_context(org_id, policy.as_dict(), {})
        try:
            rules = delivery_settings.parse_rules(data, context["rules"])
        except delivery_settings.RulesInvalid as error:
            context |= {"rules_errors": error.errors, "rules_values": data}
            return Template("webhooks/retry_config.html", context=context, status_code=422)
        await delivery_settings.set_rules(org_id, rules)
        context |= {"rules": rules, "rules_saved": True}
        return Template("webhooks/retry_config.html", context=context)

    @post("/preview", name="retry:preview")
    async def preview(self, request: Request) -> Template:
        values = _policy_form(await request.form())
        return HTMXTemplate(template_name="webhooks/partials/retry_preview.html", context=_policy_context(values, {}))


def _policy_form(form: FormMultiDict) -> dict[str, Any]:
    return {f: str(form.get(f, "")) for f in POLICY_FIELDS if f != "jitter"} | {"jitter": form.get("jitter") == "on"}


async def _page_context(org_id, values: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    return _policy_context(values, errors) | {"rules": await delivery_settings.rules(org_id)}


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
