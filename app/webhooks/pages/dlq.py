"""The dead-letter queue page: filter, retry or clear one item, or start a bulk job over the filter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from litestar import Controller, Response, get, post
from litestar.exceptions import ClientException
from litestar.params import FromPath, FromQuery
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of
from app.core.paging import BadQuery
from app.lifecycle import retention
from app.webhooks import bulk, dlq, operations, services

FILTER_FIELDS = ("webhook_id", "event_type", "reason", "since", "until")


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
        query = {"webhook_id": webhook_id, "event_type": event_type, "reason": reason, "since": since, "until": until}
        dlq_filter = dlq.parse_filter(query, lenient=True)
        try:
            page = await dlq.list_dlq(principal.org_id, dlq_filter, 50, cursor or None)
        except BadQuery:
            page = await dlq.list_dlq(principal.org_id, dlq_filter, 50, None)
        context = {
            "items": page.items,
            "next_cursor": page.next_cursor,
            "filter": dlq_filter,
            "query": {key: value or "" for key, value in query.items()},
            "webhooks": await services.list_webhooks(principal.org_id),
            "reasons": list(dlq.REASONS),
        }
        if request.htmx and request.htmx.target == "dlq-items":
            return HTMXTemplate(template_name="webhooks/partials/dlq_items.html", context=context)
        context["expiring"] = await _expiring(principal.org_id)
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
            return HTMXTemplate(
                template_name="partials/flashes.html",
                context={"flashes": [{"message": message, "ok": ok}], "flash_inline": True},
            )
        return Redirect(path=request.app.route_reverse("dlq:list"))

    @post("/bulk", name="dlq:bulk", guards=[admin_only])
    async def bulk(self, request: HTMXRequest) -> Response:
        principal = principal_of(request)
        form = await request.form()
        kind = {"retry": "dlq_retry", "clear": "dlq_clear"}.get(str(form.get("action")))
        if kind is None:
            raise ClientException("Unknown bulk action: choose retry or clear.")
        dlq_filter = dlq.parse_filter({key: str(form.get(key, "")) for key in FILTER_FIELDS}, lenient=True)
        job_id = await bulk.start_bulk(principal.org_id, kind, dlq_filter, principal.user_id)
        job = await bulk.get_job(principal.org_id, job_id)
        return HTMXTemplate(template_name="webhooks/partials/job_progress.html", context={"job": job})


async def _expiring(org_id: uuid.UUID) -> dict:
    """What of the organisation's DLQ reaches its retention within a day (the notice above the list)."""
    keep = await retention.for_org(org_id)
    count, first_at = await retention.dlq_expiring(org_id, keep=keep)
    return {
        "count": count,
        "first_at": first_at,
        "first_ahead": first_at is not None and first_at > datetime.now(UTC),
        "period": retention.describe(keep.seconds("deliveries")),
    }
