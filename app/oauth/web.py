"""OAuth pages (the connection panel), the provider callback, and the JSON API (CONTRACT)."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template

from app.accounts.auth import admin_only, principal_of, session_id_of
from app.core import flash
from app.core.problems import Problem
from app.oauth import providers, services
from app.oauth.providers import ENDPOINT_FIELDS

READ = {"scopes": ["oauth:read"]}
WRITE = {"scopes": ["oauth:write"]}


def connection_out(row: dict[str, Any]) -> dict[str, Any]:
    """A connection as the API shows it: everything but the tokens."""
    provider = providers.get(row["provider"])
    requested = provider.split_scopes(row["scopes_requested"]) if provider else row["scopes_requested"].split()
    granted = provider.split_scopes(row["scopes_granted"]) if provider else row["scopes_granted"].split()
    return {
        "id": str(row["id"]),
        "provider": row["provider"],
        "account": row["account_label"],
        "account_id": row["account_id"],
        "status": row["status"],
        "scopes_requested": requested,
        "scopes_granted": granted,
        "scopes_missing": [s for s in requested if s not in granted],
        "expires_at": row["expires_at"],
        "last_refreshed_at": row["last_refreshed_at"],
        "next_refresh_at": row["next_refresh_at"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }


class OAuthPanel(Controller):
    path = "/oauth"
    include_in_schema = False

    @get("/", name="oauth:panel")
    async def panel(self, request: Request) -> Template:
        return Template("oauth/panel.html", context=await self._context(request))

    async def _context(self, request: Request, **extra: Any) -> dict[str, Any]:
        principal = principal_of(request)
        rows = await services.connections(principal.org_id)
        histories = await services.histories(principal.org_id, [row["id"] for row in rows], limit=8)
        return {
            "providers": providers.available(),
            "clients": await services.clients(principal.org_id),
            "connections": [connection_out(row) for row in rows],
            "histories": histories,
            "flashes": await flash.pop(session_id_of(request)),
            "redirect_uri": services.redirect_uri,
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
            await services.save_client(principal.org_id, provider_key, data)
        except services.OAuthInvalid as invalid:
            context = await self._context(
                request, errors=invalid.errors, values=data | {"client_secret": ""}, open_provider=provider_key
            )
            return Template("oauth/panel.html", context=context, status_code=422)
        name = services.provider_or_404(provider_key).name
        await flash.push(session_id_of(request), f"Saved the {name} client settings.", ok=True)
        return Redirect(path=request.app.route_reverse("oauth:panel"))

    @post("/{provider_key:str}/connect", name="oauth:connect", guards=[admin_only])
    async def connect(self, request: Request, provider_key: FromPath[str]) -> Redirect:
        principal = principal_of(request)
        try:
            url = await services.start_connect(
                principal.org_id,
                provider_key,
                user_id=principal.user_id,
                session_id=session_id_of(request),
                actor=principal.actor,
            )
        except services.ConnectFailed as failed:
            await flash.push(session_id_of(request), str(failed), ok=False)
            return Redirect(path=request.app.route_reverse("oauth:panel"))
        return Redirect(path=url)

    @post("/connections/{connection_id:uuid}/refresh", name="oauth:refresh", guards=[admin_only])
    async def refresh(self, request: Request, connection_id: FromPath[uuid.UUID]) -> Redirect:
        principal = principal_of(request)
        await services.connection(principal.org_id, connection_id)  # 404 for another organisation's
        outcome = await services.refresh(connection_id, force=True)
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
        row = await services.connection(principal.org_id, connection_id)
        outcome = await services.disconnect(principal.org_id, connection_id, principal.actor)
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
        connected = await services.finish_connect(provider_key, params, session_id, admin_of)
    except services.ConnectFailed as failed:
        message, ok = str(failed), False
    else:
        message, ok = f"Connected {connected.provider.name} as {connected.account}.", True
        if connected.missing_scopes:
            message += " The provider did not grant: " + ", ".join(connected.missing_scopes) + "."
    if request.scope.get("user") is not None and session_id:
        await flash.push(session_id, message, ok=ok)
        return Redirect(path=request.app.route_reverse("oauth:panel"))
    return Template("oauth/result.html", context={"message": message, "ok": ok}, status_code=200 if ok else 400)


class OAuthApi(Controller):
    path = "/oauth"
    tags = ["OAuth"]

    @get("/connections", opt=READ, summary="The organisation's OAuth connections (never a token)")
    async def list_connections(self, request: Request) -> dict[str, Any]:
        rows = await services.connections(principal_of(request).org_id)
        return {"items": [connection_out(row) for row in rows], "next_cursor": None}

    @get("/connections/{connection_id:uuid}", opt=READ, summary="One connection with its recent history")
    async def get_connection(self, request: Request, connection_id: FromPath[uuid.UUID]) -> dict[str, Any]:
        org_id = principal_of(request).org_id
        row = await services.connection(org_id, connection_id)
        return connection_out(row) | {"history": await services.history(org_id, connection_id)}

    @post("/{provider_key:str}/connect", opt=WRITE, status_code=200, summary="Start a connection")
    async def connect(self, request: Request, provider_key: FromPath[str]) -> dict[str, str]:
        """Returns the provider's authorization URL. Open it in a browser signed in to the portal as an admin
        of this organisation: the flow is finished there (anyone else sent the link is refused)."""
        principal = principal_of(request)
        try:
            url = await services.start_connect(
                principal.org_id, provider_key, user_id=None, session_id=None, actor=principal.actor
            )
        except services.ConnectFailed as failed:
            raise Problem(409, str(failed)) from None
        return {"authorization_url": url}

    @delete("/connections/{connection_id:uuid}", opt=WRITE, status_code=200, summary="Revoke and delete")
    async def disconnect(self, request: Request, connection_id: FromPath[uuid.UUID]) -> Response[dict[str, str]]:
        principal = principal_of(request)
        outcome = await services.disconnect(principal.org_id, connection_id, principal.actor)
        return Response({"id": str(connection_id), "status": "revoked", "revocation": outcome})


PAGES = [OAuthPanel]
API = [OAuthApi]
