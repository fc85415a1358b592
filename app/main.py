"""Builds the Litestar app: pages under /employee/admin/integrations, the JSON API under /api/v1."""

from __future__ import annotations

import logging

from litestar import Litestar, Router
from litestar.config.csrf import CSRFConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, RapidocRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.htmx import HTMXPlugin
from litestar.static_files import create_static_files_router

from app import __version__
from app.accounts.auth import AuthMiddleware, api_token, signed_in
from app.accounts.controllers import LoginController, TokensController
from app.core import db
from app.core.problems import EXCEPTION_HANDLERS
from app.core.redis import close_redis
from app.core.settings import PACKAGE_DIR, get_settings
from app.core.templating import template_config
from app.events.controllers import CatalogPage, EventsApi
from app.integrations import api as integrations_api
from app.integrations import pages as integrations_pages
from app.lifecycle import api as lifecycle_api
from app.lifecycle import pages as lifecycle_pages
from app.oauth import api as oauth_api
from app.oauth import pages as oauth_pages
from app.portal.controllers import PortalController, healthz, root
from app.webhooks import api as webhooks_api
from app.webhooks import pages as webhooks_pages

ADMIN_PREFIX = "/employee/admin/integrations"
API_PREFIX = "/api/v1"
VERSION = __version__


async def _startup(app: Litestar) -> None:
    app.state.owns_pool = await db.open_pool()


async def _shutdown(app: Litestar) -> None:
    if app.state.get("owns_pool"):
        await db.close_pool()
    await close_redis()


def create_app() -> Litestar:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    admin = Router(
        path=ADMIN_PREFIX,
        guards=[signed_in],
        route_handlers=[
            PortalController,
            TokensController,
            CatalogPage,
            *webhooks_pages.ROUTES,
            *oauth_pages.ROUTES,
            *integrations_pages.ROUTES,
            *lifecycle_pages.ROUTES,
        ],
        include_in_schema=False,
    )
    api = Router(
        path=API_PREFIX,
        guards=[api_token],
        route_handlers=[
            EventsApi,
            *webhooks_api.ROUTES,
            *oauth_api.ROUTES,
            *integrations_api.ROUTES,
            *lifecycle_api.ROUTES,
        ],
        security=[{"BearerToken": []}],
    )
    return Litestar(
        route_handlers=[
            root,
            healthz,
            LoginController,
            oauth_pages.callback,
            admin,
            api,
            create_static_files_router(
                path="/static", directories=[PACKAGE_DIR / "static"], name="static", include_in_schema=False
            ),
        ],
        middleware=[AuthMiddleware()],
        csrf_config=CSRFConfig(
            secret=settings.security.secret_key,
            cookie_name="intime_csrf",
            cookie_httponly=True,
            cookie_secure=settings.security.cookie_secure,
            exclude=["^/api/", "^/healthz$"],
        ),
        template_config=template_config,
        plugins=[HTMXPlugin()],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="InTime Integrations API",
            version=VERSION,
            path="/schema",
            # The reference UI is vendored like htmx: the portal loads nothing from a CDN.
            render_plugins=[
                RapidocRenderPlugin(path="/", js_url="/static/vendor/rapidoc-9.min.js"),
                JsonRenderPlugin(),
            ],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An API token from the portal's API tokens page or `intime token create`.",
                    )
                }
            ),
        ),
        on_startup=[_startup],
        on_shutdown=[_shutdown],
        debug=False,
    )
