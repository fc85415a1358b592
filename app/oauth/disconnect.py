"""Disconnect: revoke at the provider (RFC 7009) where it can, delete the tokens, keep the row and its
history for audit (who connected what, and when it ended, stays answerable after the tokens are gone)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
from authlib.integrations.httpx_client import OAuthError

from app.core import db, guard
from app.core.crypto import DecryptionError
from app.events import services as events
from app.oauth import audit, providers, vault
from app.oauth.clients import PROVIDER_CALL_SECONDS, LoadedClient, authlib_client, describe_error, load_client
from app.oauth.errors import ConnectFailed, NotFound
from app.oauth.refresh import locked

log = logging.getLogger("intime.oauth")


async def disconnect(org_id: uuid.UUID, connection_id: uuid.UUID, actor: str) -> str:
    """Revoke at the provider where it can (RFC 7009), delete the tokens, keep the row and its history.
    Returns what happened at the provider, for the admin. Takes the token lock, so a refresh in flight
    cannot bring tokens back; a second disconnect changes nothing and announces nothing."""
    async with locked(connection_id, wait=PROVIDER_CALL_SECONDS + 5):
        async with db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT id, provider, account_label, access_token, refresh_token, status FROM oauth_connections "
                "WHERE org_id = $1 AND id = $2",
                org_id,
                connection_id,
            )
            if row is None:
                raise NotFound("No such OAuth connection in this organisation.")
            if row["status"] == "revoked":
                return "already disconnected"
            provider = providers.get(row["provider"])
            try:
                client = await load_client(conn, org_id, provider) if provider else None
            except ConnectFailed:
                client = None  # the tokens are deleted all the same
        outcome = await _revoke(row, client)
        async with db.connection() as conn, conn.transaction():
            await conn.execute(vault.DURABLE)
            changed = await conn.fetchval(
                "UPDATE oauth_connections SET access_token = NULL, refresh_token = NULL, status = 'revoked', "
                "revoked_at = now(), next_refresh_at = NULL, refresh_enqueued_at = NULL, updated_at = now(), "
                "token_generation = token_generation + 1 WHERE id = $1 AND status <> 'revoked' RETURNING id",
                connection_id,
            )
            if changed is None:
                return "already disconnected"
            await audit.record(conn, org_id, connection_id, "disconnected", outcome, actor)
            await events.publish_in(
                conn,
                org_id,
                "oauth.connection.disconnected",
                {"connection_id": str(connection_id), "provider": row["provider"], "account": row["account_label"]},
            )
    return outcome


async def _revoke(row, client: LoadedClient | None) -> str:
    """RFC 7009: the refresh token first, which ends the whole grant at most providers (Google answers
    a later access-token revocation with invalid_token); the access token only when there is no
    refresh token, or the refresh revocation was refused."""
    if row["access_token"] is None and row["refresh_token"] is None:
        return "no tokens were stored"
    if client is None or not client.endpoints.revoke_url:
        return "tokens deleted (the provider has no revocation endpoint)"
    try:
        async with asyncio.timeout(PROVIDER_CALL_SECONDS), authlib_client(client) as oauth:
            for kind, hint in (("refresh", "refresh_token"), ("access", "access_token")):
                sealed = row[f"{kind}_token"]
                if sealed is None:
                    continue
                token = vault.open_token(row["id"], kind, sealed)
                response = await oauth.revoke_token(client.endpoints.revoke_url, token=token, token_type_hint=hint)
                if response.status_code < 400 and _revocation_ok(response):
                    return f"revoked at the provider ({hint.replace('_', ' ')}) and deleted"
    except (httpx.HTTPError, OSError, TimeoutError, guard.OutboundRefused, DecryptionError, OAuthError) as error:
        log.warning("revoking OAuth connection %s failed: %s", row["id"], error)
        return f"tokens deleted; revoking at the provider failed ({describe_error(error)})"
    return "tokens deleted; the provider refused the revocation"


def _revocation_ok(response: httpx.Response) -> bool:
    """RFC 7009 says 200 is success; Slack's auth.revoke answers 200 with {"ok": false} on failure."""
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("ok") is False)
