"""The portal's shell: the overview page, its live fragments, and the health probe."""

from __future__ import annotations

from litestar import Controller, Request, get
from litestar.plugins.htmx import HTMXRequest, HTMXTemplate
from litestar.response import Redirect, Response, Template

from app.accounts import tokens
from app.accounts.auth import principal_of
from app.accounts.tables import User
from app.core import heartbeat
from app.core.db import engine
from app.core.redis import get_redis
from app.events import services as events


class PortalController(Controller):
    include_in_schema = False

    @get("/", name="portal:index")
    async def index(self, request: Request) -> Template:
        principal = principal_of(request)
        context = {
            "events_24h": await events.count_since(principal.org_id, 24),
            "event_types": len(await events.known_types()),
            "tokens": sum(1 for t in await tokens.list_tokens(principal.org_id) if t["state"] == "active"),
            "users": await User.count().where(User.org == principal.org_id),
            "processes": await heartbeat.last_seen(),
            "recent": await events.recent_events(principal.org_id),
        }
        return Template("portal/index.html", context=context)

    @get("/partials/recent-events", name="portal:recent-events")
    async def recent_events(self, request: HTMXRequest) -> Template:
        principal = principal_of(request)
        return HTMXTemplate(
            template_name="portal/partials/recent_events.html",
            context={
                "recent": await events.recent_events(principal.org_id),
                "processes": await heartbeat.last_seen(),
            },
        )


@get("/", name="root", include_in_schema=False)
async def root(request: Request) -> Redirect:
    return Redirect(path=request.app.route_reverse("portal:index"))


@get("/healthz", name="healthz", include_in_schema=False)
async def healthz() -> Response:
    """For load balancers and supervisors: 200 when PostgreSQL and Redis both answer."""
    checks = {}
    try:
        await engine().run_ddl("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as error:  # a probe reports, it does not raise
        checks["postgres"] = f"error: {type(error).__name__}"
    try:
        await get_redis().ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"error: {type(error).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return Response(content={"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)
