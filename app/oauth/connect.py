"""The connect flow: from an admin's Connect to a saved connection.

`start_connect` keeps the flow's state in Redis for ten minutes (the PKCE verifier, the OIDC nonce,
who started it and from which session) and returns the provider's authorization URL;
`finish_connect` takes the callback, refuses a state that is unknown, used, or from another session,
exchanges the code (with the verifier), identifies the account (a checked id_token, or userinfo) and
saves the connection. Every failure becomes a `ConnectFailed` whose message says what to do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.core import db, guard
from app.core.redis import get_redis
from app.events import services as events
from app.oauth import audit, providers, vault
from app.oauth.clients import (
    PROVIDER_CALL_SECONDS,
    LoadedClient,
    authlib_client,
    checked_token,
    describe_error,
    is_oidc,
    load_client,
    provider_or_404,
    redirect_uri,
)
from app.oauth.errors import ConnectFailed
from app.oauth.providers import Provider
from app.oauth.refresh import schedule

STATE_TTL_SECONDS = 600


def _state_key(state: str) -> str:
    return f"intime:oauth:state:{state}"


def _session_tag(session_id: str | None) -> str | None:
    return hashlib.sha256(session_id.encode()).hexdigest() if session_id else None


async def start_connect(
    org_id: uuid.UUID, provider_key: str, *, user_id: uuid.UUID | None, session_id: str | None, actor: str
) -> str:
    """The provider's authorization URL for a new connection (or a reconnection of the same account).

    `session_id` binds the flow to the browser session that started it; None (the API) binds it to
    nothing but the unguessable, single-use state itself."""
    provider = provider_or_404(provider_key)
    async with db.connection() as conn:
        client = await load_client(conn, org_id, provider)
    if client is None:
        raise ConnectFailed(
            f"{provider.name} is not set up for this organisation yet: enter your app's client id and secret "
            "(and, for a provider of your own, its endpoints) first.",
            org_id,
        )
    state, verifier, nonce = generate_token(40), generate_token(64), generate_token(32)
    record = {
        "org_id": str(org_id),
        "provider": provider.key,
        "verifier": verifier,
        "nonce": nonce,
        "scopes": client.scopes,
        "user_id": str(user_id) if user_id else None,
        "session": _session_tag(session_id),
        "actor": actor,
    }
    await get_redis().set(_state_key(state), json.dumps(record), ex=STATE_TTL_SECONDS)
    extra: dict[str, str] = dict(provider.authorize_params)
    if is_oidc(client):
        extra["nonce"] = nonce
    async with authlib_client(
        client, scope=provider.join_scopes(client.scopes), redirect_uri=redirect_uri(provider.key)
    ) as oauth:
        url, _ = oauth.create_authorization_url(
            client.endpoints.authorize_url, state=state, code_verifier=verifier, **extra
        )
    return url


@dataclass
class Connected:
    org_id: uuid.UUID
    connection_id: uuid.UUID
    account: str
    provider: Provider
    missing_scopes: list[str]


async def finish_connect(
    provider_key: str, params: dict[str, str], session_id: str | None, signed_in_admin_of: uuid.UUID | None = None
) -> Connected:
    """The callback: check the state, exchange the code, identify the account, save the connection.

    A flow started in the portal must come back to the same browser session. One started through the
    API has no session to come back to: it must be finished by a signed-in admin of the organisation
    (`signed_in_admin_of`), or anyone sent the link could connect their own account to it."""
    state = params.get("state") or ""
    raw = await get_redis().getdel(_state_key(state)) if 0 < len(state) <= 200 else None
    if raw is None:
        raise ConnectFailed(
            "This sign-in link has expired or was already used (links last ten minutes and work once). "
            "Nothing was connected: start again with Connect."
        )
    record = json.loads(raw)
    org_id = uuid.UUID(record["org_id"])
    provider = providers.get(record["provider"])
    if provider is None or provider.key != provider_key:
        raise ConnectFailed("The answer came back for a different provider than the one started. Start again.", org_id)
    if record["session"] is None and signed_in_admin_of != org_id:
        raise ConnectFailed(
            "A connection started through the API must be finished in a browser signed in to the portal as an "
            "admin of the organisation that started it. Sign in, then start again.",
            None,
        )
    if record["session"] is not None and record["session"] != _session_tag(session_id):
        raise ConnectFailed(
            "This connection was started in another browser session, so it was refused (it could be an attempt "
            "to connect someone else's account to yours). Start again with Connect from this window.",
            org_id,
        )
    if params.get("error"):
        if params["error"] == "access_denied":
            raise ConnectFailed(
                f"Access was declined at {provider.name}. Nothing was connected; press Connect to try again.", org_id
            )
        detail = (params.get("error_description") or "")[:300]
        raise ConnectFailed(
            f"{provider.name} answered with an error: {params['error'][:100]}{f' ({detail})' if detail else ''}. "
            "Check the client id, the redirect URI and the scopes registered at the provider, then try again.",
            org_id,
        )
    code = params.get("code") or ""
    if not code or len(code) > 2000:
        raise ConnectFailed(f"{provider.name} sent no authorization code back. Start again with Connect.", org_id)
    async with db.connection() as conn:
        client = await load_client(conn, org_id, provider)
    if client is None:
        raise ConnectFailed(
            f"{provider.name}'s client settings were removed meanwhile. Enter them and start again.", org_id
        )
    requested = record["scopes"]
    try:
        async with (
            asyncio.timeout(PROVIDER_CALL_SECONDS),
            authlib_client(client, redirect_uri=redirect_uri(provider.key)) as oauth,
        ):
            token = checked_token(
                await oauth.fetch_token(
                    client.endpoints.token_url,
                    code=code,
                    code_verifier=record["verifier"],
                    grant_type="authorization_code",
                )
            )
            account_id, label = await _identify(oauth, client, token, record["nonce"])
    except OAuthError as error:
        raise ConnectFailed(
            f"{provider.name} refused to issue tokens ({error.error}"
            f"{': ' + str(error.description)[:200] if error.description else ''}). "
            "Check the client id and secret, then start again with Connect.",
            org_id,
        ) from None
    except (httpx.HTTPError, OSError, guard.OutboundRefused, ValueError, TypeError, TimeoutError) as error:
        raise ConnectFailed(
            f"Could not complete the connection with {provider.name}: {describe_error(error)}. Try again in a moment.",
            org_id,
        ) from None
    granted = provider.split_scopes(token.get("scope")) if token.get("scope") else list(requested)
    connection_id = await _save_connection(
        org_id, provider, account_id, label, requested, granted, token, record["user_id"], record["actor"]
    )
    return Connected(org_id, connection_id, label, provider, [s for s in requested if s not in granted])


def _dig(data: dict[str, Any], path: str) -> str | None:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return str(value) if value not in (None, "") else None


async def _identify(oauth: AsyncOAuth2Client, client: LoadedClient, token: dict, nonce: str) -> tuple[str, str]:
    """The account behind the tokens: a verified id_token's claims, then userinfo for what they lack."""
    provider, endpoints = client.provider, client.endpoints
    claims: dict[str, Any] = {}
    if is_oidc(client) and token.get("id_token"):
        response = await oauth.get(endpoints.jwks_url, auth=None)  # type: ignore[arg-type]
        response.raise_for_status()
        try:
            decoded = jwt.decode(token["id_token"], KeySet.import_key_set(response.json()))
            required: dict[str, Any] = {"aud": {"essential": True, "value": client.client_id}}
            required["nonce"] = {"essential": True, "value": nonce}
            if endpoints.issuer:
                # Google documents both spellings of its issuer.
                issuers = [endpoints.issuer, endpoints.issuer.removeprefix("https://")]
                required["iss"] = {"essential": True, "values": list(dict.fromkeys(issuers))}
            jwt.JWTClaimsRegistry(**required).validate(decoded.claims)
        except (JoseError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"its ID token did not check out ({error})") from None
        claims = dict(decoded.claims)
    if endpoints.userinfo_url and not (_dig(claims, provider.account_id) and _dig(claims, provider.account_label)):
        response = await oauth.get(endpoints.userinfo_url)
        response.raise_for_status()
        info = response.json()
        if isinstance(info, dict):
            claims = info | claims
    account_id = _dig(claims, provider.account_id)
    if account_id is None:
        raise ValueError("it did not say which account was connected")
    return account_id, _dig(claims, provider.account_label) or account_id


async def _save_connection(
    org_id: uuid.UUID,
    provider: Provider,
    account_id: str,
    label: str,
    requested: list[str],
    granted: list[str],
    token: dict,
    user_id: str | None,
    actor: str,
) -> uuid.UUID:
    now = datetime.now(UTC)
    expires_at, next_refresh = schedule(token, now)
    async with db.connection() as conn, conn.transaction():
        await conn.execute(vault.DURABLE)
        # Two callbacks for the same account at once (a double click, two tabs) take turns here.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"oauth-connection:{org_id}:{provider.key}:{account_id}"
        )
        existing = await conn.fetchrow(
            "SELECT id, refresh_token FROM oauth_connections WHERE org_id = $1 AND provider = $2 AND account_id = $3 "
            "FOR UPDATE",
            org_id,
            provider.key,
            account_id,
        )
        connection_id = existing["id"] if existing else uuid.uuid4()
        refresh = token["refresh_token"] if isinstance(token.get("refresh_token"), str) else None
        sealed_refresh = vault.seal_token(connection_id, "refresh", refresh) if refresh else None
        if sealed_refresh is None and existing is not None:
            sealed_refresh = existing["refresh_token"]  # a reconnect without a new refresh token keeps the old one
        values = (
            connection_id,
            org_id,
            provider.key,
            account_id,
            label,
            provider.join_scopes(requested),
            provider.join_scopes(granted),
            vault.seal_token(connection_id, "access", token["access_token"]),
            sealed_refresh,
            str(token.get("token_type") or "Bearer")[:20],
            expires_at,
            next_refresh if sealed_refresh else None,
            uuid.UUID(user_id) if user_id else None,
        )
        await conn.execute(
            "INSERT INTO oauth_connections (id, org_id, provider, account_id, account_label, scopes_requested, "
            "scopes_granted, access_token, refresh_token, token_type, expires_at, status, last_refreshed_at, "
            "next_refresh_at, refresh_enqueued_at, refresh_failures, last_error, connected_by, created_at, updated_at, "
            "revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', NULL, $12, NULL, 0, NULL, "
            "$13, now(), now(), NULL) "
            "ON CONFLICT (id) DO UPDATE SET account_label = EXCLUDED.account_label, "
            "scopes_requested = EXCLUDED.scopes_requested, scopes_granted = EXCLUDED.scopes_granted, "
            "access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token, "
            "token_type = EXCLUDED.token_type, expires_at = EXCLUDED.expires_at, status = 'active', "
            "next_refresh_at = EXCLUDED.next_refresh_at, refresh_enqueued_at = NULL, refresh_failures = 0, "
            "last_error = NULL, connected_by = EXCLUDED.connected_by, updated_at = now(), revoked_at = NULL, "
            "token_generation = oauth_connections.token_generation + 1",
            *values,
        )
        kind = "reconnected" if existing else "connected"
        scopes = provider.join_scopes(granted)
        await audit.record(conn, org_id, connection_id, kind, f"{label}; scopes: {scopes}", actor)
        await events.publish_in(
            conn,
            org_id,
            "oauth.connection.connected",
            {"connection_id": str(connection_id), "provider": provider.key, "account": label},
        )
    return connection_id
