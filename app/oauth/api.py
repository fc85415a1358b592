"""The OAuth JSON API (CONTRACT.md): list connections, start one, disconnect one. Finishing a
connection needs a browser (the provider's consent page), so the API only hands out the URL."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.core.problems import Problem
from app.oauth import queries, schemas
from app.oauth.connect import start_connect
from app.oauth.disconnect import disconnect as disconnect_connection
from app.oauth.errors import ConnectFailed

READ = {"scopes": ["oauth:read"]}
WRITE = {"scopes": ["oauth:write"]}
# 400 on routes with path parameters: Litestar documents one for them anyway; ours says it is problem+json.


class OAuthApi(Controller):
    path = "/oauth"
    tags = ["OAuth"]

    @get(
        "/connections",
        opt=READ,
        summary="The organisation's OAuth connections (never a token)",
        responses=errors(),
    )
    async def list_connections(self, request: Request) -> schemas.ConnectionList:
        rows = await queries.connections(principal_of(request).org_id)
        return schemas.ConnectionList(items=[schemas.connection_out(row) for row in rows])

    @get(
        "/connections/{connection_id:uuid}",
        opt=READ,
        summary="One connection with its recent history",
        responses=errors(400, 404),
    )
    async def get_connection(self, request: Request, connection_id: FromPath[uuid.UUID]) -> schemas.ConnectionDetail:
        org_id = principal_of(request).org_id
        row = await queries.connection(org_id, connection_id)
        return schemas.connection_detail(row, await queries.history(org_id, connection_id))

    @post(
        "/{provider_key:str}/connect",
        opt=WRITE,
        status_code=200,
        summary="Start a connection",
        responses=errors(400, 404, 409),
    )
    async def connect(self, request: Request, provider_key: FromPath[str]) -> schemas.AuthorizationUrl:
        """Returns the provider's authorization URL. Open it in a browser signed in to the portal as an admin
        of this organisation: the flow is finished there (anyone else sent the link is refused). 404 for a
        provider key that is not in the registry; 409 while the organisation has not set the provider up."""
        principal = principal_of(request)
        try:
            url = await start_connect(
                principal.org_id, provider_key, user_id=None, session_id=None, actor=principal.actor
            )
        except ConnectFailed as failed:
            raise Problem(409, str(failed)) from None
        return schemas.AuthorizationUrl(authorization_url=url)

    @delete(
        "/connections/{connection_id:uuid}",
        opt=WRITE,
        status_code=200,
        summary="Revoke and delete",
        responses=errors(400, 404),
    )
    async def disconnect(self, request: Request, connection_id: FromPath[uuid.UUID]) -> schemas.Disconnected:
        principal = principal_of(request)
        outcome = await disconnect_connection(principal.org_id, connection_id, principal.actor)
        return schemas.Disconnected(id=connection_id, status="revoked", revocation=outcome)


ROUTES = [OAuthApi]
