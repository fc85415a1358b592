"""The OAuth panel (client settings, connect, refresh, disconnect) and the provider callback."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import flash
from app.oauth import clients, providers, queries
from app.oauth.connect import finish_connect, start_connect
from app.oauth.disconnect import disconnect as disconnect_connection
from app.oauth.errors import ConnectFailed, OAuthInvalid
from app.oauth.providers import ENDPOINT_FIELDS
from app.oauth.refresh import refresh as refresh_connection
from app.oauth.schemas import connection_out


class OAuthPanel(Controller):
    path = "/oauth"
    include_in_schema = False

    @get("/", name="oauth:panel")
    async def panel(self, request: Request) -> Template:
        return Template("oauth/panel.html", context=await self._context(request))

    async def _context(self, request: Request, **extra: Any) -> dict[str, Any]:
        principal = principal_of(request)
        rows = await queries.connections(principal.org_id)
        histories = await queries.histories(principal.org_id, [row["id"] for row in rows], limit=8)
        return {
            "providers": providers.available(),
            "clients": await clients.clients(principal.org_id),
            "connections": [connection_out(row) for row in rows],
            "histories": histories,
            "flashes": await flash.pop(session_id_of(request)),
            "redirect_uri": clients.redirect_uri,
            "endpoint_fields": ENDPOINT_FIELDS,
            "errors": {},
            "values": {},
            "open_provider": None,
        } | extra

    @post("/clients/{provider_key:str}", name="oauth:save-client", guards=[admin_only], status_code=200)
    async def save_client(self, request: Request, provider_key: FromPath[str]) -> Template | Redirect:
        principal = principal_of(request)
        form = await request.form()
        fields = ("client_id", "client_secret", "scopes", "discovery_url", *ENDPOINT_FIELDS)
        data = {key: str(form.get(key, "")) for key in fields}
        try:
            await clients.save_client(principal.org_id, provider_key, data)
        except OAuthInvalid as invalid:
            context = await self._context(
                request, errors=invalid.errors, values=data | {"client_secret": ""}, open_provider=provider_key
            )
            return Template("oauth/panel.html", context=context, status_code=422)
        name = clients.provider_or_404(provider_key).name
        await flash.push(session_id_of(request), f"Saved the {name} client settings.", ok=True)
        return Redirect(path=request.app.route_reverse("oauth:panel"))

    @post("/{provider_key:str}/connect", name="oauth:connect", guards=[admin_only])
    async def connect(self, request: Request, provider_key: FromPath[str]) -> Redirect:
        principal = principal_of(request)
        try:
            url = await start_connect(
                principal.org_id,
                provider_key,
                user_id=principal.user_id,
                session_id=session_id_of(request),
                actor=principal.actor,
            )
        except ConnectFailed as failed:
            await flash.push(session_id_of(request), str(failed), ok=False)
            return Redirect(path=request.app.route_reverse("oauth:panel"))
        return Redirect(path=url)

    @post("/connections/{connection_id:uuid}/refresh", name="oauth:refresh", guards=[admin_only])
    async def refresh(self, request: Request, connection_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        await queries.connection(principal.org_id, connection_id)  # 404 for another organisation's
        outcome = await refresh_connection(connection_id, force=True)
        messages = {
            "refreshed": ("Refreshed: a new access token is in place.", True),
            "busy": ("A refresh of this connection is already running; reload in a moment.", True),
            "unavailable": ("This connection cannot be refreshed: reconnect it.", False),
            "needs_reauth": ("The provider refused the refresh token: reconnect this connection.", False),
            "failed": ("Refreshing failed; the error is shown on the connection and it will be retried.", False),
        }
        message, ok = messages.get(outcome, ("Nothing to refresh.", True))
        await flash.push(session_id_of(request), message, ok=ok)
        return Redirect(path=request.app.route_reverse("oauth:panel"))

    @post("/connections/{connection_id:uuid}/disconnect", name="oauth:disconnect", guards=[admin_only])
    async def disconnect(self, request: Request, connection_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        row = await queries.connection(principal.org_id, connection_id)
        outcome = await disconnect_connection(principal.org_id, connection_id, principal.actor)
        await flash.push(session_id_of(request), f"Disconnected {row['account_label']}: {outcome}.", ok=True)
        return Redirect(path=request.app.route_reverse("oauth:panel"))


@get("/oauth/{provider_key:str}/callback", name="oauth:callback", include_in_schema=False)
async def callback(request: Request, provider_key: FromPath[str]) -> Template | Redirect:
    """Where the provider sends the admin back. Signed in (the usual case): a message on the panel.
    Not signed in (a flow started through the API must be finished by a signed-in admin of its
    organisation): a small page says what happened."""
    params = {key: str(value) for key, value in request.query_params.items()}
    session_id = session_id_of(request)
    principal = request.scope.get("user")
    admin_of = principal.org_id if principal is not None and principal.is_admin else None
    try:
        connected = await finish_connect(provider_key, params, session_id, admin_of)
    except ConnectFailed as failed:
        message, ok = str(failed), False
    else:
        message, ok = f"Connected {connected.provider.name} as {connected.account}.", True
        if connected.missing_scopes:
            message += " The provider did not grant: " + ", ".join(connected.missing_scopes) + "."
    if request.scope.get("user") is not None and session_id:
        await flash.push(session_id, message, ok=ok)
        return Redirect(path=request.app.route_reverse("oauth:panel"))
    return Template("oauth/result.html", context={"message": message, "ok": ok}, status_code=200 if ok else 400)


ROUTES = [OAuthPanel]
