"""The retention page: what the organisation keeps, for how long, and when pruning last ran.

Everyone signed in sees it; only an admin changes it. A save ends on a redirect back to the page
(POST-redirect-GET) with a one-time "Retention saved", so reloading the page never posts again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from litestar import Controller, Request, get, post
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import flash
from app.core.settings import DAY
from app.lifecycle import retention

TEMPLATE = "lifecycle/retention.html"


class RetentionPage(Controller):
    path = "/retention"
    include_in_schema = False

    @get("/", name="lifecycle:retention")
    async def page(self, request: Request) -> Template:
        org_id = principal_of(request).org_id
        keep = await retention.for_org(org_id)
        context = await _context(org_id, keep, _chosen_values(keep), {})
        context["flashes"] = await flash.pop(session_id_of(request))
        return Template(TEMPLATE, context=context)

    @post("/", name="lifecycle:retention-save", guards=[admin_only], status_code=303)
    async def save(self, request: Request) -> Template | Redirect:
        principal = principal_of(request)
        form = await request.form()
        typed = {name: str(form.get(name, "")) for name in retention.NAMES}
        try:
            await retention.set_for_org(principal.org_id, _parseable(typed), principal.user_id)
        except retention.RetentionInvalid as invalid:
            keep = await retention.for_org(principal.org_id)
            context = await _context(principal.org_id, keep, typed, invalid.errors)
            return Template(TEMPLATE, context=context, status_code=422)
        await flash.push(session_id_of(request), "Retention saved", ok=True)
        return Redirect(path=request.app.route_reverse("lifecycle:retention"), status_code=303)


ROUTES: list = [RetentionPage]


def _parseable(typed: Mapping[str, str]) -> dict[str, str]:
    """The form for retention.parse, with anything but ASCII made plainly wrong: `str.isdigit` accepts
    digits such as `²` that `int` refuses, and those should get the field's message, not a 500."""
    return {name: value if value.isascii() else "?" for name, value in typed.items()}


def _chosen_values(keep: retention.Retention) -> dict[str, str]:
    return {name: "" if days is None else str(days) for name, days in keep.chosen.items()}


def approx_bytes(size: int) -> str:
    """Bytes as people read them (decimal units): `512 B`, `8.4 kB`, `120 MB`, `3.2 GB`."""
    value, unit = float(size), "B"
    for bigger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, bigger
    if unit == "B":
        return f"{size} B"
    return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"


def _placeholder(seconds: int) -> str:
    return f"default: {seconds // DAY}" if seconds % DAY == 0 else f"default: {retention.describe(seconds)}"


async def _context(
    org_id: uuid.UUID, keep: retention.Retention, values: Mapping[str, str], errors: Mapping[str, str]
) -> dict[str, Any]:
    held = await retention.holdings(org_id)
    pruned = await retention.prune_status()
    kinds = []
    for kind in retention.KINDS:
        name, chosen = kind.name, keep.chosen.get(kind.name)
        seconds = keep.seconds(name)
        kinds.append(
            {
                "name": name,
                "label": kind.label,
                "what": kind.what,
                "period": retention.describe(seconds),
                "source": "default" if chosen is None else "chosen",
                # A choice made before the installation lowered its cap: the cap applies.
                "capped": chosen is not None and chosen * DAY > keep.caps[name],
                "default": retention.describe(keep.defaults[name]),
                "placeholder": _placeholder(keep.defaults[name]),
                "cap": retention.describe(keep.caps[name]),
                "rows": held.get(name, {}).get("rows", 0),
                "bytes": approx_bytes(held.get(name, {}).get("bytes", 0)),
                "pruned": pruned.get(name),
            }
        )
    return {"kinds": kinds, "values": dict(values), "errors": dict(errors), "flashes": []}
