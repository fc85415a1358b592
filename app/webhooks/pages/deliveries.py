"""Replaying a delivery from a page: the history table's row, the DLQ's row, or a plain form post."""

from __future__ import annotations

import uuid

from litestar import Controller, Response, post
from litestar.params import FromPath
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect

from app.accounts.auth import admin_only, principal_of
from app.core.urls import local_path
from app.webhooks import operations, queries


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
                template_name="partials/flashes.html",
                context={"flashes": [{"message": message, "ok": ok}], "flash_inline": True},
                status_code=200 if ok else 409,
            )
        return Redirect(path=local_path(str(form.get("back", "")), request.app.route_reverse("dlq:list")))
