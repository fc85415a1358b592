"""Client settings: the organisation's app at each provider (client id, sealed secret, scopes, and for
a provider of your own its endpoints, typed in or read from a discovery document), and the Authlib
client built from them for every exchange with the provider.

Provider traffic goes through the outbound guard, like webhook deliveries: a discovery URL or token
endpoint typed by an admin must not reach the internal network.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client

from app.core import db, guard, outbound
from app.core.crypto import DecryptionError
from app.core.settings import get_settings
from app.oauth import providers, vault
from app.oauth.errors import ConnectFailed, NotFound, OAuthInvalid
from app.oauth.providers import ENDPOINT_FIELDS, Endpoints, Provider

REQUEST_TIMEOUT = 15.0
PROVIDER_CALL_SECONDS = 20.0  # a whole provider exchange, well inside the refresh lock's lifetime
SECRET_REQUIRED = "Enter the client secret (it is stored encrypted and not shown again)."  # noqa: S105


def provider_or_404(key: str) -> Provider:
    provider = providers.get(key)
    if provider is None:
        raise NotFound(f"No OAuth provider called {key!r}.")
    return provider


async def clients(org_id: uuid.UUID) -> dict[str, Any]:
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT id, provider, client_id, scopes, endpoints::text AS endpoints, updated_at "
            "FROM oauth_clients WHERE org_id = $1",
            org_id,
        )
    return {row["provider"]: dict(row) | {"endpoints": json.loads(row["endpoints"])} for row in rows}


async def _validate_client(provider: Provider, data: dict[str, Any], existing: bool) -> dict[str, Any]:
    errors: dict[str, str] = {}
    client_id = str(data.get("client_id") or "").strip()
    secret = str(data.get("client_secret") or "").strip()
    if not client_id:
        errors["client_id"] = "Enter the client id the provider gave your app."
    elif len(client_id) > 500:
        errors["client_id"] = "At most 500 characters."
    if not secret and not existing:
        errors["client_secret"] = SECRET_REQUIRED
    elif len(secret) > 2000:
        errors["client_secret"] = "At most 2,000 characters."  # noqa: S105
    raw_scopes = str(data.get("scopes") or "").replace(",", " ").split()
    if any(len(s) > 200 or not s.isprintable() or '"' in s for s in raw_scopes) or len(raw_scopes) > 50:
        errors["scopes"] = "Scopes are words separated by spaces (at most 50)."
    endpoints: dict[str, str] = {}
    if provider.configurable:
        discovery = str(data.get("discovery_url") or "").strip()
        if discovery:
            try:
                found = await _discover(discovery)
            except (httpx.HTTPError, OSError, ValueError, guard.OutboundRefused) as error:
                errors["discovery_url"] = f"Could not read the discovery document: {describe_error(error)}."
                found = {}
            data = {name: data.get(name) or found.get(name, "") for name in ENDPOINT_FIELDS} | {
                k: v for k, v in data.items() if k not in ENDPOINT_FIELDS
            }
        for name in ENDPOINT_FIELDS:
            value = str(data.get(name) or "").strip()
            if not value:
                if name in ("authorize_url", "token_url"):
                    errors[name] = "Required for a provider of your own."
                continue
            try:
                if name == "issuer":
                    guard.parse_target(value)
                else:
                    await guard.check_url(value)
            except guard.OutboundRefused as refused:
                errors[name] = str(refused)
                continue
            endpoints[name] = value
    if errors:
        raise OAuthInvalid(errors)
    return {"client_id": client_id, "client_secret": secret, "scopes": " ".join(raw_scopes), "endpoints": endpoints}


DISCOVERY_FIELDS = {
    "authorize_url": "authorization_endpoint",
    "token_url": "token_endpoint",
    "revoke_url": "revocation_endpoint",
    "userinfo_url": "userinfo_endpoint",
    "issuer": "issuer",
    "jwks_url": "jwks_uri",
}


async def _discover(url: str) -> dict[str, str]:
    """A provider's endpoints from its OpenID Connect / OAuth 2.0 discovery document."""
    await guard.check_url(url)
    async with (
        asyncio.timeout(PROVIDER_CALL_SECONDS),
        httpx.AsyncClient(
            transport=outbound.make_transport(max_connections=2), timeout=REQUEST_TIMEOUT, follow_redirects=False
        ) as http,
    ):
        response = await http.get(url, headers={"Accept": "application/json"})
    response.raise_for_status()
    document = response.json()
    if not isinstance(document, dict) or not document.get("authorization_endpoint"):
        raise ValueError("it has no authorization_endpoint")
    return {ours: str(document[theirs]) for ours, theirs in DISCOVERY_FIELDS.items() if document.get(theirs)}


async def save_client(org_id: uuid.UUID, provider_key: str, data: dict[str, Any]) -> None:
    """Create or update the organisation's client at a provider; a blank secret keeps the stored one."""
    provider = provider_or_404(provider_key)
    async with db.connection() as conn:  # validated first: it may fetch a discovery document
        known = await conn.fetchval(
            "SELECT id FROM oauth_clients WHERE org_id = $1 AND provider = $2", org_id, provider.key
        )
    values = await _validate_client(provider, data, known is not None)
    async with db.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"oauth-client:{org_id}:{provider.key}")
        existing = await conn.fetchrow(
            "SELECT id FROM oauth_clients WHERE org_id = $1 AND provider = $2 FOR UPDATE", org_id, provider.key
        )
        if existing is None and not values["client_secret"]:
            raise OAuthInvalid({"client_secret": SECRET_REQUIRED})
        client_uuid = existing["id"] if existing else uuid.uuid4()
        sealed = vault.seal_client_secret(client_uuid, values["client_secret"]) if values["client_secret"] else None
        if existing:
            await conn.execute(
                "UPDATE oauth_clients SET client_id = $2, client_secret = COALESCE($3, client_secret), scopes = $4, "
                "endpoints = $5::jsonb, updated_at = now() WHERE id = $1",
                client_uuid,
                values["client_id"],
                sealed,
                values["scopes"],
                json.dumps(values["endpoints"]),
            )
        else:
            await conn.execute(
                "INSERT INTO oauth_clients (id, org_id, provider, client_id, client_secret, scopes, endpoints, "
                "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, now(), now())",
                client_uuid,
                org_id,
                provider.key,
                values["client_id"],
                sealed,
                values["scopes"],
                json.dumps(values["endpoints"]),
            )


@dataclass
class LoadedClient:
    """A client's settings with the secret opened: what an exchange with the provider needs."""

    provider: Provider
    endpoints: Endpoints
    client_id: str
    client_secret: str
    scopes: list[str]


async def load_client(conn, org_id: uuid.UUID, provider: Provider) -> LoadedClient | None:
    """None when the organisation has not set the provider up (or its endpoints are incomplete)."""
    row = await conn.fetchrow(
        "SELECT id, client_id, client_secret, scopes, endpoints::text AS endpoints FROM oauth_clients "
        "WHERE org_id = $1 AND provider = $2",
        org_id,
        provider.key,
    )
    if row is None:
        return None
    endpoints = provider.endpoints(json.loads(row["endpoints"]))
    if endpoints is None:
        return None
    try:
        secret = vault.open_client_secret(row["id"], row["client_secret"])
    except DecryptionError:
        raise ConnectFailed(
            f"The {provider.name} client secret cannot be read: it was sealed with an encryption key that is no "
            "longer configured. Enter the client secret again.",
            org_id,
        ) from None
    scopes = provider.split_scopes(row["scopes"]) or list(provider.default_scopes)
    return LoadedClient(provider, endpoints, row["client_id"], secret, scopes)


def is_oidc(client: LoadedClient) -> bool:
    """OpenID Connect: a nonce goes out and the id_token is checked. Built-in providers say so in the
    registry; a provider of your own does when it has a JWKS URL and `openid` is requested."""
    oidc = client.provider.oidc or client.provider.configurable
    return oidc and bool(client.endpoints.jwks_url) and "openid" in client.scopes


def authlib_client(client: LoadedClient, **kwargs: Any) -> AsyncOAuth2Client:
    """Authlib's client over the guarded transport; redirects are not followed, like webhook deliveries."""
    return AsyncOAuth2Client(
        client_id=client.client_id,
        client_secret=client.client_secret,
        code_challenge_method="S256",
        transport=outbound.make_transport(max_connections=4),
        timeout=REQUEST_TIMEOUT,
        trust_env=False,
        follow_redirects=False,
        **kwargs,
    )


def redirect_uri(provider_key: str) -> str:
    return f"{get_settings().server.base_url}/oauth/{provider_key}/callback"


def checked_token(token: Any) -> dict[str, Any]:
    """A token response we can store: an access token string; the scope as text however it came."""
    if not isinstance(token, dict) or not isinstance(token.get("access_token"), str) or not token["access_token"]:
        raise ValueError("its token response has no access token")
    if isinstance(token.get("scope"), list):
        token["scope"] = " ".join(str(s) for s in token["scope"])
    elif token.get("scope") is not None and not isinstance(token["scope"], str):
        token["scope"] = None
    return token


def describe_error(error: BaseException) -> str:
    """A provider failure in words for the admin (and the connection's last error)."""
    if isinstance(error, httpx.HTTPStatusError):
        return f"the provider answered HTTP {error.response.status_code}"
    if isinstance(error, guard.OutboundRefused):
        return str(error)
    if isinstance(error, httpx.HTTPError | OSError):
        return f"the provider could not be reached ({outbound.classify_error(error)})"
    return str(error)[:200] or type(error).__name__
