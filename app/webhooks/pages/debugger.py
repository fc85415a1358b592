"""The webhook debugger (`webhooks/{id}`): what was sent, when, what came back, what happens next.

The page is made of fragments that htmx refreshes on their own: the summary and charts, the
delivery history (which keeps its filters because it is the filter form's own target), and the
inspector beside it (outside the refreshed history, so an open delivery stays open).
"""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, FromQuery
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Template

from app.accounts.auth import admin_only, principal_of
from app.core import times
from app.webhooks import bulk, charts, delivery_settings, queries, retry_config, services, stats
from app.webhooks.dlq import FailedSince
from app.webhooks.tables import DeliveryStatus, Webhook

WINDOWS = {"24h": 24, "7d": 168}
PAGE_SIZE = 50


@dataclass
class HistoryFilter:
    status: str = ""
    event_type: str = ""
    since: str = ""
    until: str = ""
    q: str = ""
    cursor: str = ""

    @property
    def first_page(self) -> bool:
        return not self.cursor


async def _history(request: Request, webhook: Webhook, flt: HistoryFilter) -> dict[str, Any]:
    status = flt.status if flt.status in {s.value for s in DeliveryStatus} else None
    error = None
    try:
        page = await queries.list_deliveries(
            principal_of(request).org_id,
            webhook.id,
            status=status,
            event_type=flt.event_type or None,
            since=times.parse_time_or_none(flt.since),
            until=times.parse_time_or_none(flt.until),
            limit=PAGE_SIZE,
            cursor=flt.cursor or None,
            search=flt.q or None,
        )
    except queries.BadQuery as bad:
        error, page = str(bad), queries.Page([], None)
    return {
        "webhook": webhook,
        "deliveries": page.items,
        "next_cursor": page.next_cursor,
        "filter": flt,
        "history_error": error,
    }


async def _overview(webhook: Webhook, window: str) -> dict[str, Any]:
    hours = WINDOWS.get(window, 24)
    day, _ = await stats.load(webhook.id, 24)
    week, series = await stats.load(webhook.id, 168)
    if hours == 24:
        series = series[-24:]
    label = "last 24 hours" if hours == 24 else "last 7 days"
    return {
        "windows": {"24 h": day, "7 days": week},
        "window": "24h" if hours == 24 else "7d",
        "series": series,
        "outcomes_svg": charts.outcomes_chart(series, label),
        "latency_svg": charts.latency_chart(series, label),
        "next_retry": await queries.next_retry(webhook.id),
    }


def as_curl(url: str, headers: dict[str, str], body: str) -> str:
    """The attempt as a shell command (masked credentials stay masked: fill them in to replay)."""
    parts = ["curl", "-X", "POST", shlex.quote(url)]
    for name, value in headers.items():
        parts += ["-H", shlex.quote(f"{name}: {value}")]
    parts += ["--data-binary", shlex.quote(body)]
    return " ".join(parts)


class DebuggerPages(Controller):
    path = "/webhooks"
    include_in_schema = False

    @get("/{webhook_id:uuid}", name="webhooks:detail")
    async def detail(
        self,
        request: HTMXRequest,
        webhook_id: FromPath[uuid.UUID],
        window: FromQuery[str] = "24h",
        status: FromQuery[str] = "",
        event_type: FromQuery[str] = "",
        since: FromQuery[str] = "",
        until: FromQuery[str] = "",
        q: FromQuery[str] = "",
        cursor: FromQuery[str] = "",
        open: FromQuery[str] = "",
    ) -> Template:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        flt = HistoryFilter(status, event_type, since, until, q, cursor)
        target = request.htmx.target if request.htmx else None
        if target == "history":
            return HTMXTemplate(
                template_name="webhooks/partials/history.html", context=await _history(request, webhook, flt)
            )
        if target == "overview":
            return HTMXTemplate(
                template_name="webhooks/partials/overview.html",
                context={"webhook": webhook, **await _overview(webhook, window)},
            )
        policy = retry_config.effective_policy(webhook.retry_policy, await retry_config.org_policy(webhook.org))
        inspector = await queries.get_delivery(principal_of(request).org_id, open) if open else None
        if inspector is not None and inspector["webhook_id"] != webhook.id:
            inspector = None
        limits = (await delivery_settings.limits([webhook.id]))[webhook.id]
        rate = limits.rate_limit_per_second
        context = {
            "webhook": webhook,
            "policy": policy,
            "policy_is_override": webhook.retry_policy not in (None, "null"),
            "limits": limits,
            "rate": None if rate is None else delivery_settings.shown_rate(rate),
            **await _overview(webhook, window),
            **await _history(request, webhook, flt),
            "delivery": inspector,
            "curl": _curl(inspector) if inspector else None,
        }
        return Template("webhooks/detail.html", context=context)

    @get("/{webhook_id:uuid}/deliveries/{delivery_id:uuid}", name="webhooks:inspect")
    async def inspect(
        self, request: HTMXRequest, webhook_id: FromPath[uuid.UUID], delivery_id: FromPath[uuid.UUID]
    ) -> Template:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        found = await queries.get_delivery(principal_of(request).org_id, delivery_id)
        if found is None or found["webhook_id"] != webhook.id:
            raise NotFoundException("No such delivery for this webhook.")
        context = {"webhook": webhook, "delivery": found, "curl": _curl(found)}
        if request.htmx:
            return HTMXTemplate(template_name="webhooks/partials/inspector.html", context=context)
        return Template("webhooks/inspect.html", context=context)

    @post("/{webhook_id:uuid}/replay-failed", name="webhooks:replay-failed", guards=[admin_only], status_code=202)
    async def replay_failed(self, request: HTMXRequest, webhook_id: FromPath[uuid.UUID]) -> Template:
        webhook = await services.get_webhook(principal_of(request).org_id, webhook_id)
        principal = principal_of(request)
        since = times.parse_time_or_none(str((await request.form()).get("since", "")))
        if since is None:
            raise ClientException("Choose the time from which to replay failed deliveries.")
        selection = FailedSince(webhook_id=webhook.id, since=since)
        job_id = await bulk.start_bulk(principal.org_id, "replay_failed", selection, principal.user_id)
        job = await bulk.get_job(principal.org_id, job_id)
        return HTMXTemplate(template_name="webhooks/partials/job_progress.html", context={"job": job}, status_code=202)


def _curl(found: dict[str, Any]) -> str | None:
    attempts = found["attempts"]
    sent = [a for a in attempts if a["request_headers"]]
    if not sent or found["event_erased_at"]:  # erased: the body that was sent is gone, so is the command
        return None
    return as_curl(sent[-1]["request_url"], sent[-1]["request_headers"], found["request_body"])
