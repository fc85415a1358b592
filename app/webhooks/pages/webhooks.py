"""The webhooks list and the webhook form: create, edit, enable / disable, delete, rotate the secret, test."""

from __future__ import annotations

import json
import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath
from litestar.plugins.htmx import HTMXTemplate
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of
from app.core.urls import local_path
from app.webhooks import delivery_settings, operations, patterns, retry, retry_config, secrets, services, validation
from app.webhooks.pages.retry_config import POLICY_FIELDS
from app.webhooks.tables import Webhook


def _form_to_data(form: FormMultiDict) -> tuple[dict[str, Any], dict[str, str]]:
    """A submitted webhook form as the API's JSON shape, plus errors only a form can make."""
    errors: dict[str, str] = {}
    headers: dict[str, str] = {}
    for number, line in enumerate(str(form.get("headers", "")).splitlines(), 1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            errors["headers"] = f"Line {number}: write each header as Name: value."
            break
        headers[name.strip()] = value.strip()
    data: dict[str, Any] = {
        "name": str(form.get("name", "")),
        "url": str(form.get("url", "")),
        "description": str(form.get("description", "")),
        "event_patterns": str(form.get("event_patterns", "")),
        "enabled": form.get("enabled") == "on",
        "timeout_seconds": str(form.get("timeout_seconds", "15")),
        "headers": headers,
        "retry_policy": {f: str(form.get(f"policy_{f}", "")) for f in POLICY_FIELDS if f != "jitter"}
        | {"jitter": form.get("policy_jitter") == "on"}
        if form.get("policy_override") == "on"
        else None,
    }
    for field in ("max_in_flight", "rate_limit_per_second"):
        if field in form:  # blank: the organisation's cap, no rate limit (null in the API)
            data[field] = str(form.get(field, "")).strip() or None
    return data, errors


def _form_values(webhook: Webhook | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    if data is not None:
        return (
            {"max_in_flight": None, "rate_limit_per_second": None}
            | data
            | {"headers_text": "\n".join(f"{k}: {v}" for k, v in data.get("headers", {}).items())}
        )
    if webhook is None:
        return {
            "name": "",
            "url": "",
            "description": "",
            "event_patterns": "",
            "enabled": True,
            "timeout_seconds": 15,
            "headers_text": "",
            "retry_policy": None,
            "max_in_flight": None,
            "rate_limit_per_second": None,
        }
    headers = secrets.shown_headers(webhook)  # credentials masked; a masked value sent back is kept
    policy = json.loads(webhook.retry_policy) if isinstance(webhook.retry_policy, str) else webhook.retry_policy
    rate = webhook.rate_limit_per_second
    return {
        "name": webhook.name,
        "url": webhook.url,
        "description": webhook.description,
        "event_patterns": ", ".join(webhook.event_patterns),
        "enabled": webhook.enabled,
        "timeout_seconds": webhook.timeout_seconds,
        "retry_policy": policy,
        "headers_text": "\n".join(f"{k}: {v}" for k, v in headers.items()),
        "max_in_flight": webhook.max_in_flight,
        "rate_limit_per_second": None if rate is None else delivery_settings.shown_rate(rate),
    }


async def _form_context(principal, values: dict[str, Any], errors: dict[str, str], webhook=None) -> dict[str, Any]:
    catalog = await validation.catalog_domains()
    domains = sorted(set(catalog.values()))
    categories = sorted({name.split(".")[0] for name in catalog})
    return {
        "values": values,
        "errors": errors,
        "webhook": webhook,
        "catalog": sorted(catalog),
        "suggestions": ["*", *[f"{d}.*" for d in domains], *[f"{c}.*" for c in categories], *sorted(catalog)],
        "org_policy": await retry_config.org_policy(principal.org_id),
        "org_rules": await delivery_settings.rules(principal.org_id),
        "strategies": retry.STRATEGIES,
        "matched": _matched(values.get("event_patterns", ""), catalog),
    }


def _matched(raw: Any, catalog: dict[str, str]) -> dict[str, Any]:
    items = raw if isinstance(raw, list) else [p for p in str(raw).replace(",", " ").split() if p]
    try:
        valid = patterns.validate_patterns(items, catalog) if items else []
        return {"types": patterns.matching_types(valid, catalog), "error": None}
    except patterns.PatternError as error:
        return {"types": [], "error": str(error)}


class WebhookPages(Controller):
    path = "/webhooks"
    include_in_schema = False

    @get("/", name="webhooks:list")
    async def list_page(self, request: Request) -> Template:
        principal = principal_of(request)
        return Template("webhooks/list.html", context={"webhooks": await services.list_webhooks(principal.org_id)})

    @get("/new", name="webhooks:new", guards=[admin_only])
    async def new_page(self, request: Request) -> Template:
        context = await _form_context(principal_of(request), _form_values(), {})
        return Template("webhooks/form.html", context=context)

    @post("/new", name="webhooks:create", guards=[admin_only])
    async def create(self, request: Request) -> Template:
        principal = principal_of(request)
        data, errors = _form_to_data(await request.form())
        if not errors:
            try:
                webhook, secret = await services.create_webhook(principal.org_id, data)
            except validation.WebhookInvalid as invalid:
                errors = invalid.errors
            else:
                return Template(
                    "webhooks/created.html", context={"webhook": webhook, "secret": secret}, status_code=201
                )
        context = await _form_context(principal, _form_values(data=data), errors)
        return Template("webhooks/form.html", context=context, status_code=422)

    @post("/patterns-preview", name="webhooks:patterns-preview")
    async def patterns_preview(self, request: Request) -> Template:
        form = await request.form()
        matched = _matched(str(form.get("event_patterns", "")), await validation.catalog_domains())
        return HTMXTemplate(template_name="webhooks/partials/pattern_preview.html", context={"matched": matched})

    @get("/{webhook_id:uuid}/edit", name="webhooks:edit", guards=[admin_only])
    async def edit_page(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> Template:
        principal = principal_of(request)
        webhook = await services.get_webhook(principal.org_id, webhook_id)
        context = await _form_context(principal, _form_values(webhook), {}, webhook)
        return Template("webhooks/form.html", context=context)

    @post("/{webhook_id:uuid}/edit", name="webhooks:update", guards=[admin_only])
    async def update(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> Template | Redirect:
        principal = principal_of(request)
        webhook = await services.get_webhook(principal.org_id, webhook_id)
        data, errors = _form_to_data(await request.form())
        if not errors:
            try:
                await services.update_webhook(principal.org_id, webhook.id, data)
            except validation.WebhookInvalid as invalid:
                errors = invalid.errors
            else:
                return Redirect(path=request.app.route_reverse("webhooks:detail", webhook_id=webhook.id))
        context = await _form_context(principal, _form_values(data=data), errors, webhook)
        return Template("webhooks/form.html", context=context, status_code=422)

    @post("/{webhook_id:uuid}/enabled", name="webhooks:set-enabled", guards=[admin_only])
    async def set_enabled(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        webhook = await services.get_webhook(principal.org_id, webhook_id)
        form = await request.form()
        await services.set_enabled(principal.org_id, webhook.id, form.get("enabled") == "true")
        return Redirect(path=local_path(str(form.get("back", "")), request.app.route_reverse("webhooks:list")))

    @post("/{webhook_id:uuid}/delete", name="webhooks:delete", guards=[admin_only])
    async def remove(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        webhook = await services.get_webhook(principal.org_id, webhook_id)
        await services.delete_webhook(principal.org_id, webhook.id)
        return Redirect(path=request.app.route_reverse("webhooks:list"))

    @post("/{webhook_id:uuid}/rotate-secret", name="webhooks:rotate", guards=[admin_only])
    async def rotate(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> Template:
        principal = principal_of(request)
        webhook = await services.get_webhook(principal.org_id, webhook_id)
        secret = await secrets.rotate_secret(webhook)
        return Template("webhooks/created.html", context={"webhook": webhook, "secret": secret, "rotated": True})

    @post("/{webhook_id:uuid}/test", name="webhooks:test", guards=[admin_only])
    async def send_test(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        webhook = await services.get_webhook(principal.org_id, webhook_id)
        await operations.send_test(principal.org_id, webhook.id)
        return Redirect(path=request.app.route_reverse("webhooks:detail", webhook_id=webhook.id))
