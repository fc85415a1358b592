"""The integrations list: every integration with its active provider and health at a glance."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.response import Template

from app.accounts.auth import principal_of, session_id_of
from app.core import flash
from app.integrations import queries, setup


class IntegrationListPage(Controller):
    path = "/integrations"
    include_in_schema = False

    @get("/", name="integrations:list")
    async def list_page(self, request: Request) -> Template:
        items = await queries.overview(principal_of(request).org_id)
        flashes = await flash.pop(session_id_of(request))
        context = {"integrations": items, "kinds": setup.KINDS, "flashes": flashes}
        return Template("integrations/list.html", context=context)
