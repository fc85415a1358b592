"""The webhook pages: list, create / edit / delete, the webhook's deliveries, retry config, the DLQ."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of
from app.core.urls import local_path
from app.webhooks import operations, patterns, queries, retry, services
from app.webhooks.debugger import DebuggerPages
from app.webhooks.operations import DlqFilter
from app.webhooks.tables import DlqReason, Webhook

HX_STOP_POLLING = 286
POLICY_FIELDS = ("strategy", "base_delay_ms", "max_delay_ms", "max_retries", "jitter")


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
    return data, errors


def _form_values(webhook: Webhook | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    if data is not None:
        return data | {"headers_text": "\n".join(f"{k}: {v}" for k, v in data.get("headers", {}).items())}
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
        }
    headers = services.shown_headers(webhook)  # credentials masked; a masked value sent back is kept
    policy = json.loads(webhook.retry_policy) if isinstance(webhook.retry_policy, str) else webhook.retry_policy
    return {
        "name": webhook.name,
        "url": webhook.url,
        "description": webhook.description,
        "event_patterns": ", ".join(webhook.event_patterns),
        "enabled": webhook.enabled,
        "timeout_seconds": webhook.timeout_seconds,
        "retry_policy": policy,
        "headers_text": "\n".join(f"{k}: {v}" for k, v in headers.items()),
    }


async def _form_context(principal, values: dict[str, Any], errors: dict[str, str], webhook=None) -> dict[str, Any]:
    catalog = await services.catalog_domains()
    domains = sorted(set(catalog.values()))
    categories = sorted({name.split(".")[0] for name in catalog})
    return {
        "values": values,
        "errors": errors,
        "webhook": webhook,
        "catalog": sorted(catalog),
        "suggestions": ["*", *[f"{d}.*" for d in domains], *[f"{c}.*" for c in categories], *sorted(catalog)],
        "org_policy": await services.org_policy(principal.org_id),
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
            except services.WebhookInvalid as invalid:
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
        matched = _matched(str(form.get("event_patterns", "")), await services.catalog_domains())
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
            except services.WebhookInvalid as invalid:
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
        secret = await services.rotate_secret(principal.org_id, webhook.id)
        return Template("webhooks/created.html", context={"webhook": webhook, "secret": secret, "rotated": True})

    @post("/{webhook_id:uuid}/test", name="webhooks:test", guards=[admin_only])
    async def send_test(self, request: Request, webhook_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        webhook = await services.get_webhook(principal.org_id, webhook_id)
        await operations.send_test(principal.org_id, webhook.id)
        return Redirect(path=request.app.route_reverse("webhooks:detail", webhook_id=webhook.id))


class DeliveryPages(Controller):
    path = "/deliveries"
    include_in_schema = False

    @post("/{delivery_id:uuid}/replay", name="deliveries:replay", guards=[admin_only])
    async def replay(self, request: HTMXRequest, delivery_id: FromPath[uuid.UUID]) -> Response:
        principal = principal_of(request)
        form = await request.form()
        message, ok = "Queued: a new attempt is on its way.", True
        try:
            await operations.replay(principal.org_id, delivery_id, only_dlq=form.get("from") == "dlq")
        except operations.Conflict as error:
            message, ok = str(error), False
        if request.htmx and form.get("row") and ok:
            # In the history table the row itself is the answer: it turns to pending in place.
            found = await queries.get_delivery(principal.org_id, delivery_id)
            return HTMXTemplate(
                template_name="webhooks/partials/delivery_row.html",
                context={"d": found, "webhook_id": found["webhook_id"] if found else None},
            )
        if request.htmx:
            return HTMXTemplate(
                template_name="webhooks/partials/flash.html",
                context={"message": message, "ok": ok},
                status_code=200 if ok else 409,
            )
        return Redirect(path=local_path(str(form.get("back", "")), request.app.route_reverse("dlq:list")))


def _parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    # The page's datetime-local fields carry no zone: they are labelled, and read, as UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class RetryConfigPage(Controller):
    path = "/retry-config"
    include_in_schema = False

    @get("/", name="retry:config")
    async def page(self, request: Request) -> Template:
        policy = await services.org_policy(principal_of(request).org_id)
        return Template("webhooks/retry_config.html", context=_policy_context(policy.as_dict(), {}))

    @post("/", name="retry:save", guards=[admin_only], status_code=200)
    async def save(self, request: Request) -> Template:
        values = _policy_form(await request.form())
        try:
            policy = await services.set_org_policy(principal_of(request).org_id, values)
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


class DlqPages(Controller):
    path = "/dlq"
    include_in_schema = False

    @get("/", name="dlq:list")
    async def page(
        self,
        request: HTMXRequest,
        webhook_id: FromQuery[str | None] = None,
        event_type: FromQuery[str | None] = None,
        reason: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        principal = principal_of(request)
        dlq_filter = _page_filter(webhook_id, event_type, reason, since, until)
        try:
            page = await queries.list_dlq(principal.org_id, dlq_filter, 50, cursor or None)
        except queries.BadQuery:
            page = await queries.list_dlq(principal.org_id, dlq_filter, 50, None)
        context = {
            "items": page.items,
            "next_cursor": page.next_cursor,
            "filter": dlq_filter,
            "query": {
                "webhook_id": webhook_id or "",
                "event_type": event_type or "",
                "reason": reason or "",
                "since": since or "",
                "until": until or "",
            },
            "webhooks": await services.list_webhooks(principal.org_id),
            "reasons": [r.value for r in DlqReason],
        }
        if request.htmx and request.htmx.target == "dlq-items":
            return HTMXTemplate(template_name="webhooks/partials/dlq_items.html", context=context)
        return Template("webhooks/dlq.html", context=context)

    @post("/{delivery_id:uuid}/clear", name="dlq:clear-one", guards=[admin_only])
    async def clear_one(self, request: HTMXRequest, delivery_id: FromPath[uuid.UUID]) -> Response:
        principal = principal_of(request)
        try:
            await operations.clear(principal.org_id, delivery_id, principal.user_id)
            message, ok = "Cleared (kept for audit).", True
        except operations.Conflict as error:
            message, ok = str(error), False
        if request.htmx:
            return HTMXTemplate(template_name="webhooks/partials/flash.html", context={"message": message, "ok": ok})
        return Redirect(path=request.app.route_reverse("dlq:list"))

    @post("/bulk", name="dlq:bulk", guards=[admin_only])
    async def bulk(self, request: HTMXRequest) -> Response:
        principal = principal_of(request)
        form = await request.form()
        kind = {"retry": "dlq_retry", "clear": "dlq_clear"}.get(str(form.get("action")))
        if kind is None:
            raise ClientException("Unknown bulk action: choose retry or clear.")
        dlq_filter = _page_filter(
            *(str(form.get(k, "")) or None for k in ("webhook_id", "event_type", "reason", "since", "until"))
        )
        job_id = await operations.start_bulk(principal.org_id, kind, dlq_filter, principal.user_id)
        job = await queries.get_job(principal.org_id, job_id)
        return HTMXTemplate(template_name="webhooks/partials/job_progress.html", context={"job": job})


def _page_filter(webhook_id, event_type, reason, since, until) -> DlqFilter:
    try:
        hook = uuid.UUID(webhook_id) if webhook_id else None
    except ValueError:
        hook = None
    return DlqFilter(
        webhook_id=hook,
        event_type=event_type or None,
        reason=reason or None,
        since=_parse_time(since),
        until=_parse_time(until),
    )


class JobPages(Controller):
    path = "/jobs"
    include_in_schema = False

    @get("/{job_id:uuid}", name="jobs:progress")
    async def job(self, request: HTMXRequest, job_id: FromPath[uuid.UUID]) -> Response:
        job = await queries.get_job(principal_of(request).org_id, job_id)
        if job is None:
            raise NotFoundException("No such job.")
        # Finished, the widget renders without its polling trigger and answers 286, htmx's "stop polling".
        status = HX_STOP_POLLING if job["status"] in ("done", "failed") else 200
        return HTMXTemplate(
            template_name="webhooks/partials/job_progress.html", context={"job": job}, status_code=status
        )


ROUTES = [WebhookPages, DebuggerPages, DeliveryPages, RetryConfigPage, DlqPages, JobPages]
