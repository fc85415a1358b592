"""OAuth connections: the connect flow, the token vault, refresh before expiry, and disconnect.

- **Connect**: `start_connect` keeps the flow's state in Redis for ten minutes (the PKCE verifier, the
  OIDC nonce, who started it and from which session) and returns the provider's authorization URL;
  `finish_connect` takes the callback, refuses a state that is unknown, used, or from another session,
  exchanges the code (with the verifier), identifies the account (a checked id_token, or userinfo) and
  saves the connection. Every failure becomes a `ConnectFailed` whose message says what to do.
- **Vault**: tokens and client secrets are sealed with the key ring (app.core.crypto), each bound to its
  row, and leave this module only through `get_access_token`.
- **Refresh**: the scheduler enqueues connections whose `next_refresh_at` has come (expiry minus the
  margin); `refresh` takes a Redis lock per connection and re-reads the row under it, so two workers
  never refresh the same token. `get_access_token` refreshes on demand when the token is about to lapse.
- **Disconnect**: revoke at the provider (RFC 7009) where it can, delete the tokens, keep the row and
  its history for audit.

Provider traffic goes through the outbound guard, like webhook deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.core import db, fields, outbound, problems
from app.core.crypto import DecryptionError, get_keyring
from app.core.redis import get_redis, run_script
from app.core.settings import get_settings
from app.events import services as events
from app.oauth import providers
from app.oauth.providers import ENDPOINT_FIELDS, Endpoints, Provider
from app.oauth.tables import ConnectionStatus

log = logging.getLogger("intime.oauth")

STATE_TTL_SECONDS = 600
LOCK_TTL_MS = 30_000
ACCESS_SKEW = timedelta(seconds=30)  # a token closer than this to its expiry is refreshed before use
REQUEST_TIMEOUT = 15.0
NotFound = problems.NotFound


class OAuthInvalid(fields.Invalid):
    """Client settings that cannot be saved."""


class ConnectFailed(Exception):
    """The connect flow stopped; the message is for the admin: what happened and what to do."""

    def __init__(self, message: str, org_id: uuid.UUID | None = None) -> None:
        super().__init__(message)
        self.org_id = org_id


class TokenUnavailable(Exception):
    """No usable access token: the connection needs reconnecting, was disconnected, or refreshing failed."""


def _client_context(client_id: uuid.UUID) -> str:
    return f"oauth-client:{client_id}"


def _token_context(connection_id: uuid.UUID, kind: str) -> str:
    return f"oauth-connection:{connection_id}:{kind}"


def _now() -> datetime:
    return datetime.now(UTC)


# --- Client settings (the organisation's app at each provider) -------------------------------------


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
        errors["client_secret"] = "Enter the client secret (it is stored encrypted and not shown again)."  # noqa: S105
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
            except (httpx.HTTPError, OSError, ValueError, outbound.OutboundRefused) as error:
                errors["discovery_url"] = f"Could not read the discovery document: {_describe(error)}."
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
                    outbound.parse_target(value)
                else:
                    await outbound.check_url(value)
            except outbound.OutboundRefused as refused:
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
    await outbound.check_url(url)
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
            raise OAuthInvalid(
                {"client_secret": "Enter the client secret (it is stored encrypted and not shown again)."}
            )
        client_uuid = existing["id"] if existing else uuid.uuid4()
        sealed = (
            get_keyring().seal(values["client_secret"], _client_context(client_uuid))
            if values["client_secret"]
            else None
        )
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
class _Client:
    provider: Provider
    endpoints: Endpoints
    client_id: str
    client_secret: str
    scopes: list[str]


async def _load_client(conn, org_id: uuid.UUID, provider: Provider) -> _Client | None:
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
        secret = get_keyring().open(row["client_secret"], _client_context(row["id"]))
    except DecryptionError:
        raise ConnectFailed(
            f"The {provider.name} client secret cannot be read: it was sealed with an encryption key that is no "
            "longer configured. Enter the client secret again.",
            org_id,
        ) from None
    scopes = provider.split_scopes(row["scopes"]) or list(provider.default_scopes)
    return _Client(provider, endpoints, row["client_id"], secret, scopes)


def _oidc(client: _Client) -> bool:
    """OpenID Connect: a nonce goes out and the id_token is checked. Built-in providers say so in the
    registry; a provider of your own does when it has a JWKS URL and `openid` is requested."""
    oidc = client.provider.oidc or client.provider.configurable
    return oidc and bool(client.endpoints.jwks_url) and "openid" in client.scopes


def _oauth(client: _Client, **kwargs: Any) -> AsyncOAuth2Client:
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


# --- Connect ------------------------------------------------------------------------------------------


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
        client = await _load_client(conn, org_id, provider)
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
    if _oidc(client):
        extra["nonce"] = nonce
    async with _oauth(
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
        client = await _load_client(conn, org_id, provider)
    if client is None:
        raise ConnectFailed(
            f"{provider.name}'s client settings were removed meanwhile. Enter them and start again.", org_id
        )
    requested = record["scopes"]
    try:
        async with (
            asyncio.timeout(PROVIDER_CALL_SECONDS),
            _oauth(client, redirect_uri=redirect_uri(provider.key)) as oauth,
        ):
            token = _checked_token(
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
    except (httpx.HTTPError, OSError, outbound.OutboundRefused, ValueError, TypeError, TimeoutError) as error:
        raise ConnectFailed(
            f"Could not complete the connection with {provider.name}: {_describe(error)}. Try again in a moment.",
            org_id,
        ) from None
    granted = provider.split_scopes(token.get("scope")) if token.get("scope") else list(requested)
    connection_id = await _save_connection(
        org_id, provider, account_id, label, requested, granted, token, record["user_id"], record["actor"]
    )
    return Connected(org_id, connection_id, label, provider, [s for s in requested if s not in granted])


def _describe(error: BaseException) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"the provider answered HTTP {error.response.status_code}"
    if isinstance(error, outbound.OutboundRefused):
        return str(error)
    if isinstance(error, httpx.HTTPError | OSError):
        return f"the provider could not be reached ({outbound.classify_error(error)})"
    return str(error)[:200] or type(error).__name__


def _dig(data: dict[str, Any], path: str) -> str | None:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return str(value) if value not in (None, "") else None


async def _identify(oauth: AsyncOAuth2Client, client: _Client, token: dict, nonce: str) -> tuple[str, str]:
    """The account behind the tokens: a verified id_token's claims, then userinfo for what they lack."""
    provider, endpoints = client.provider, client.endpoints
    claims: dict[str, Any] = {}
    if _oidc(client) and token.get("id_token"):
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


def _schedule(token: dict, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(expires_at, next_refresh_at): refresh a margin before expiry, or halfway for short-lived tokens."""
    try:
        lifetime = int(token.get("expires_in") or 0)
    except (TypeError, ValueError):
        lifetime = 0
    if lifetime <= 0:
        return None, None
    expires_at = now + timedelta(seconds=lifetime)
    margin = min(get_settings().oauth.refresh_margin_seconds, lifetime / 2)
    return expires_at, expires_at - timedelta(seconds=margin)


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
    ring, now = get_keyring(), _now()
    expires_at, next_refresh = _schedule(token, now)
    async with db.connection() as conn, conn.transaction():
        await conn.execute(DURABLE)
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
        sealed_refresh = ring.seal(refresh, _token_context(connection_id, "refresh")) if refresh else None
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
            ring.seal(token["access_token"], _token_context(connection_id, "access")),
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
        await _history(conn, org_id, connection_id, kind, f"{label}; scopes: {provider.join_scopes(granted)}", actor)
        await events.publish_in(
            conn,
            org_id,
            "oauth.connection.connected",
            {"connection_id": str(connection_id), "provider": provider.key, "account": label},
        )
    return connection_id


async def _history(conn, org_id: uuid.UUID, connection_id: uuid.UUID, kind: str, detail: str, actor: str) -> None:
    await conn.execute(
        "INSERT INTO oauth_connection_events (id, org_id, connection_id, kind, detail, actor, at) "
        "VALUES ($1, $2, $3, $4, $5, $6, now())",
        uuid.uuid4(),
        org_id,
        connection_id,
        kind,
        detail[:1000],
        actor[:200],
    )


# --- Reading ------------------------------------------------------------------------------------------

CONNECTION_COLUMNS = (
    "id, org_id, provider, account_id, account_label, scopes_requested, scopes_granted, token_type, expires_at, "
    "status, last_refreshed_at, next_refresh_at, refresh_failures, last_error, created_at, updated_at, revoked_at"
)


async def connections(org_id: uuid.UUID) -> list[dict[str, Any]]:
    """The organisation's connections, newest first; disconnected ones (revoked) are left out."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            f"SELECT {CONNECTION_COLUMNS} FROM oauth_connections WHERE org_id = $1 AND status <> $2 "  # noqa: S608
            "ORDER BY created_at DESC",
            org_id,
            ConnectionStatus.revoked.value,
        )
    return [dict(row) for row in rows]


async def connection(org_id: uuid.UUID, connection_id: uuid.UUID) -> dict[str, Any]:
    async with db.connection() as conn:
        row = await conn.fetchrow(
            f"SELECT {CONNECTION_COLUMNS} FROM oauth_connections WHERE org_id = $1 AND id = $2",  # noqa: S608
            org_id,
            connection_id,
        )
    if row is None:
        raise NotFound("No such OAuth connection in this organisation.")
    return dict(row)


async def history(org_id: uuid.UUID, connection_id: uuid.UUID, limit: int = 20) -> list[dict[str, Any]]:
    return (await histories(org_id, [connection_id], limit)).get(str(connection_id), [])


async def histories(org_id: uuid.UUID, connection_ids: list[uuid.UUID], limit: int) -> dict[str, list[dict[str, Any]]]:
    """The last `limit` events of each connection, newest first, keyed by connection id: one query."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "SELECT c.id AS connection_id, e.kind, e.detail, e.actor, e.at FROM unnest($2::uuid[]) AS c(id) "
            "CROSS JOIN LATERAL (SELECT kind, detail, actor, at FROM oauth_connection_events "
            "WHERE org_id = $1 AND connection_id = c.id ORDER BY at DESC LIMIT $3) e ORDER BY e.at DESC",
            org_id,
            connection_ids,
            limit,
        )
    out: dict[str, list[dict[str, Any]]] = {str(c): [] for c in connection_ids}
    for row in rows:
        out[str(row["connection_id"])].append({k: row[k] for k in ("kind", "detail", "actor", "at")})
    return out


# --- Refresh ------------------------------------------------------------------------------------------

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
PROVIDER_CALL_SECONDS = 20.0  # a whole provider exchange, well inside the lock's lifetime
# Token writes must survive a database crash, unlike the workers' other writes (tasks/broker.py): a
# rotated refresh token lost after the provider retired the old one cannot be recovered.
DURABLE = "SET LOCAL synchronous_commit = on"


def _lock_key(connection_id: uuid.UUID) -> str:
    return f"intime:oauth:refresh-lock:{connection_id}"


@asynccontextmanager
async def _locked(connection_id: uuid.UUID, *, wait: float) -> AsyncIterator[bool]:
    """The connection's token lock (refresh, disconnect, reconnect); yields whether it was taken."""
    redis = get_redis()
    key, holder = _lock_key(connection_id), secrets.token_hex(8)
    deadline = asyncio.get_running_loop().time() + wait
    taken = bool(await redis.set(key, holder, nx=True, px=LOCK_TTL_MS))
    while not taken and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
        taken = bool(await redis.set(key, holder, nx=True, px=LOCK_TTL_MS))
    try:
        yield taken
    finally:
        if taken:
            await run_script(_RELEASE, [key], [holder])


async def _row_for_refresh(conn, connection_id: uuid.UUID):
    return await conn.fetchrow(
        "SELECT id, org_id, provider, account_label, refresh_token, expires_at, next_refresh_at, status, "
        "refresh_failures, token_generation FROM oauth_connections WHERE id = $1",
        connection_id,
    )


def _fresh(expires_at: datetime | None, next_refresh_at: datetime | None, now: datetime) -> bool:
    """Good enough to hand out: not within the skew of its expiry. The skew is ACCESS_SKEW, or half the
    refresh margin for short-lived tokens, so a 2-second token is not "about to expire" from birth."""
    if expires_at is None:
        return True
    skew = ACCESS_SKEW
    if next_refresh_at is not None and next_refresh_at < expires_at:
        skew = min(skew, (expires_at - next_refresh_at) / 2)
    return expires_at > now + skew


def _backoff(failures: int) -> timedelta:
    return timedelta(seconds=min(300.0, 5.0 * 2 ** min(max(0, failures - 1), 10)) * random.uniform(0.8, 1.0))


def _checked_token(token: Any) -> dict[str, Any]:
    """A token response we can store: an access token string; the scope as text however it came."""
    if not isinstance(token, dict) or not isinstance(token.get("access_token"), str) or not token["access_token"]:
        raise ValueError("its token response has no access token")
    if isinstance(token.get("scope"), list):
        token["scope"] = " ".join(str(s) for s in token["scope"])
    elif token.get("scope") is not None and not isinstance(token["scope"], str):
        token["scope"] = None
    return token


async def refresh(connection_id: uuid.UUID, *, on_demand: bool = False, force: bool = False) -> str:
    """Refresh one connection's tokens if they are due (scheduled), about to lapse (`on_demand`), or
    because an admin asked (`force`).

    Returns what happened: refreshed, not_due, busy (another process holds the lock), unavailable,
    needs_reauth or failed. The lock is per connection, with a re-read of the row after taking it: a
    second refresher arriving just after the first finds fresh tokens and does nothing. Every write is
    fenced by the token generation read, so a refresh that outlived its lock, or met a disconnect or a
    reconnect, changes nothing."""
    async with _locked(connection_id, wait=0) as taken:
        if not taken:
            return "busy"
        try:
            return await _refresh_locked(connection_id, on_demand, force)
        except Exception as error:  # an answer or a state nobody foresaw: recorded, retried with backoff
            log.exception("refreshing OAuth connection %s failed", connection_id)
            async with db.connection() as conn:
                row = await _row_for_refresh(conn, connection_id)
            if row is None:
                return "unavailable"
            return await _refresh_failed(row, f"unexpected error: {_describe(error)}", permanent=False)


async def _refresh_locked(connection_id: uuid.UUID, on_demand: bool, force: bool) -> str:
    async with db.connection() as conn:
        row = await _row_for_refresh(conn, connection_id)
        if row is None or row["refresh_token"] is None or row["status"] in ("needs_reauth", "revoked"):
            return "unavailable"
        now = _now()
        if force:
            due = True
        elif on_demand:
            # Fresh enough, or a failure's backoff still running: the provider is not asked again yet.
            backing_off = row["refresh_failures"] > 0 and row["next_refresh_at"] and row["next_refresh_at"] > now
            due = not _fresh(row["expires_at"], row["next_refresh_at"], now) and not backing_off
        else:
            due = row["next_refresh_at"] is not None and row["next_refresh_at"] <= now
        if not due:
            await conn.execute("UPDATE oauth_connections SET refresh_enqueued_at = NULL WHERE id = $1", connection_id)
            return "not_due" if not on_demand or row["refresh_failures"] == 0 else "failed"
        provider = providers.get(row["provider"])
        try:
            client = await _load_client(conn, row["org_id"], provider) if provider else None
        except ConnectFailed as failed:
            return await _refresh_failed(row, str(failed), permanent=True)
        # A worker that dies here leaves `refreshing`; the sweep takes it up again a minute later.
        await conn.execute(
            "UPDATE oauth_connections SET status = 'refreshing', next_refresh_at = now() + interval '60 seconds', "
            "updated_at = now() WHERE id = $1 AND token_generation = $2",
            connection_id,
            row["token_generation"],
        )
    if client is None:
        return await _refresh_failed(row, "the provider's client settings are missing", permanent=False)
    ring = get_keyring()
    try:
        old_refresh = ring.open(row["refresh_token"], _token_context(connection_id, "refresh"))
    except DecryptionError as error:
        return await _refresh_failed(row, f"the stored refresh token cannot be read ({error})", permanent=True)
    try:
        async with asyncio.timeout(PROVIDER_CALL_SECONDS), _oauth(client) as oauth:
            token = _checked_token(await oauth.refresh_token(client.endpoints.token_url, refresh_token=old_refresh))
    except OAuthError as error:
        detail = f"{error.error}{': ' + str(error.description)[:200] if error.description else ''}"
        return await _refresh_failed(row, detail, permanent=error.error == "invalid_grant")
    except (httpx.HTTPError, OSError, ValueError, TypeError, TimeoutError, outbound.OutboundRefused) as error:
        return await _refresh_failed(row, _describe(error), permanent=False)
    now = _now()
    expires_at, next_refresh = _schedule(token, now)
    new_refresh = token.get("refresh_token")
    rotated = isinstance(new_refresh, str) and bool(new_refresh) and new_refresh != old_refresh
    async with db.connection() as conn, conn.transaction():
        await conn.execute(DURABLE)
        # One statement: the new access token and, if the provider rotated it, the new refresh token.
        # A response without a refresh token keeps the old one.
        saved = await conn.fetchval(
            "UPDATE oauth_connections SET access_token = $2, refresh_token = COALESCE($3, refresh_token), "
            "token_type = $4, expires_at = $5, next_refresh_at = $6, status = 'active', last_refreshed_at = now(), "
            "refresh_enqueued_at = NULL, refresh_failures = 0, last_error = NULL, updated_at = now(), "
            "scopes_granted = COALESCE($7, scopes_granted), token_generation = token_generation + 1 "
            "WHERE id = $1 AND token_generation = $8 AND status NOT IN ('revoked', 'needs_reauth') RETURNING id",
            connection_id,
            ring.seal(token["access_token"], _token_context(connection_id, "access")),
            ring.seal(str(new_refresh), _token_context(connection_id, "refresh")) if rotated else None,
            str(token.get("token_type") or "Bearer")[:20],
            expires_at,
            next_refresh,
            token.get("scope"),
            row["token_generation"],
        )
        if saved is None:
            return "not_due"  # disconnected, reconnected or refreshed by someone else meanwhile
        detail = "new access token" + (", refresh token rotated" if rotated else "")
        if expires_at:
            detail += f"; expires {expires_at:%Y-%m-%d %H:%M:%S} UTC"
        await _history(conn, row["org_id"], connection_id, "refreshed", detail, "system")
    return "refreshed"


async def _refresh_failed(row, detail: str, *, permanent: bool) -> str:
    """invalid_grant (or an unreadable token): needs_reauth, announced. Anything else: retried with backoff.
    Only if the tokens are still the ones this refresh read: otherwise someone else has moved on."""
    async with db.connection() as conn, conn.transaction():
        if permanent:
            changed = await conn.fetchval(
                "UPDATE oauth_connections SET status = 'needs_reauth', last_error = $2, next_refresh_at = NULL, "
                "refresh_enqueued_at = NULL, updated_at = now() "
                "WHERE id = $1 AND token_generation = $3 AND status NOT IN ('revoked', 'needs_reauth') RETURNING id",
                row["id"],
                detail,
                row["token_generation"],
            )
            if changed is None:
                return "not_due"
            await _history(conn, row["org_id"], row["id"], "needs_reauth", f"refresh refused: {detail}", "system")
            await events.publish_in(
                conn,
                row["org_id"],
                "oauth.connection.needs_reauth",
                {"connection_id": str(row["id"]), "provider": row["provider"], "error": detail[:200]},
            )
            return "needs_reauth"
        failures = row["refresh_failures"] + 1
        expired = row["expires_at"] is not None and row["expires_at"] <= _now()
        changed = await conn.fetchval(
            "UPDATE oauth_connections SET status = $2, last_error = $3, refresh_failures = $4, "
            "next_refresh_at = now() + $5::interval, refresh_enqueued_at = NULL, updated_at = now() "
            "WHERE id = $1 AND token_generation = $6 AND status NOT IN ('revoked', 'needs_reauth') RETURNING id",
            row["id"],
            "error" if expired else "active",
            detail[:1000],
            failures,
            _backoff(failures),
            row["token_generation"],
        )
        if changed is None:
            return "not_due"
        await _history(conn, row["org_id"], row["id"], "refresh_failed", f"{detail} (attempt {failures})", "system")
    return "failed"


async def due_for_refresh(limit: int = 200) -> list[uuid.UUID]:
    """The scheduler's sweep: connections whose refresh time has come, marked so they are enqueued once
    a minute at most (a worker that died mid-refresh is covered by the next minute's sweep)."""
    async with db.connection() as conn:
        rows = await conn.fetch(
            "UPDATE oauth_connections SET refresh_enqueued_at = now() WHERE id IN ("
            "SELECT id FROM oauth_connections WHERE status IN ('active', 'error', 'refreshing') "
            "AND refresh_token IS NOT NULL AND next_refresh_at <= now() "
            "AND (refresh_enqueued_at IS NULL OR refresh_enqueued_at < now() - interval '60 seconds') "
            "ORDER BY next_refresh_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id",
            limit,
        )
    return [row["id"] for row in rows]


async def get_access_token(connection_id: uuid.UUID, org_id: uuid.UUID | None = None) -> str:
    """A valid access token for the rest of the code, refreshed first if it is about to lapse.

    Raises TokenUnavailable when there is none to give (reconnect needed, disconnected, or the provider
    cannot be reached and the token has run out); NotFound for another organisation's connection."""
    for _ in range(150):  # waits up to ~30 s for a refresh another process is making
        async with db.connection() as conn:
            row = await conn.fetchrow(
                "SELECT org_id, access_token, refresh_token, expires_at, next_refresh_at, status, last_error "
                "FROM oauth_connections WHERE id = $1",
                connection_id,
            )
        if row is None or (org_id is not None and row["org_id"] != org_id):
            raise NotFound("No such OAuth connection in this organisation.")
        if row["status"] in ("needs_reauth", "revoked") or row["access_token"] is None:
            raise TokenUnavailable(f"the connection is {row['status'].replace('_', ' ')}: an admin must reconnect it")
        if _fresh(row["expires_at"], row["next_refresh_at"], _now()):
            return _open_access(connection_id, row["access_token"])
        if row["refresh_token"] is None:
            if row["expires_at"] is not None and row["expires_at"] > _now():
                return _open_access(connection_id, row["access_token"])
            raise TokenUnavailable("the access token has expired and there is no refresh token: reconnect it")
        outcome = await refresh(connection_id, on_demand=True)
        if outcome == "busy":
            await asyncio.sleep(0.2)
        elif outcome in ("failed", "needs_reauth", "unavailable"):
            if row["expires_at"] is not None and row["expires_at"] > _now():
                # Still valid for a moment: better than nothing; the sweep retries the refresh.
                return _open_access(connection_id, row["access_token"])
            raise TokenUnavailable(f"refreshing failed ({row['last_error'] or outcome}); it is retried with backoff")
    raise TokenUnavailable("another process kept the connection locked for too long")


def _open_access(connection_id: uuid.UUID, sealed: str) -> str:
    try:
        return get_keyring().open(sealed, _token_context(connection_id, "access"))
    except DecryptionError as error:
        raise TokenUnavailable(f"the stored access token cannot be read ({error}): reconnect it") from None


# --- Disconnect ---------------------------------------------------------------------------------------


async def disconnect(org_id: uuid.UUID, connection_id: uuid.UUID, actor: str) -> str:
    """Revoke at the provider where it can (RFC 7009), delete the tokens, keep the row and its history.
    Returns what happened at the provider, for the admin. Takes the token lock, so a refresh in flight
    cannot bring tokens back; a second disconnect changes nothing and announces nothing."""
    async with _locked(connection_id, wait=PROVIDER_CALL_SECONDS + 5):
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
                client = await _load_client(conn, org_id, provider) if provider else None
            except ConnectFailed:
                client = None  # the tokens are deleted all the same
        outcome = await _revoke(row, client)
        async with db.connection() as conn, conn.transaction():
            await conn.execute(DURABLE)
            changed = await conn.fetchval(
                "UPDATE oauth_connections SET access_token = NULL, refresh_token = NULL, status = 'revoked', "
                "revoked_at = now(), next_refresh_at = NULL, refresh_enqueued_at = NULL, updated_at = now(), "
                "token_generation = token_generation + 1 WHERE id = $1 AND status <> 'revoked' RETURNING id",
                connection_id,
            )
            if changed is None:
                return "already disconnected"
            await _history(conn, org_id, connection_id, "disconnected", outcome, actor)
            await events.publish_in(
                conn,
                org_id,
                "oauth.connection.disconnected",
                {"connection_id": str(connection_id), "provider": row["provider"], "account": row["account_label"]},
            )
    return outcome


async def _revoke(row, client: _Client | None) -> str:
    """RFC 7009: the refresh token first, which ends the whole grant at most providers (Google answers
    a later access-token revocation with invalid_token); the access token only when there is no
    refresh token, or the refresh revocation was refused."""
    if row["access_token"] is None and row["refresh_token"] is None:
        return "no tokens were stored"
    if client is None or not client.endpoints.revoke_url:
        return "tokens deleted (the provider has no revocation endpoint)"
    ring = get_keyring()
    try:
        async with asyncio.timeout(PROVIDER_CALL_SECONDS), _oauth(client) as oauth:
            for kind, hint in (("refresh", "refresh_token"), ("access", "access_token")):
                sealed = row[f"{kind}_token"]
                if sealed is None:
                    continue
                token = ring.open(sealed, _token_context(row["id"], kind))
                response = await oauth.revoke_token(client.endpoints.revoke_url, token=token, token_type_hint=hint)
                if response.status_code < 400 and _revocation_ok(response):
                    return f"revoked at the provider ({hint.replace('_', ' ')}) and deleted"
    except (httpx.HTTPError, OSError, TimeoutError, outbound.OutboundRefused, DecryptionError, OAuthError) as error:
        log.warning("revoking OAuth connection %s failed: %s", row["id"], error)
        return f"tokens deleted; revoking at the provider failed ({_describe(error)})"
    return "tokens deleted; the provider refused the revocation"


def _revocation_ok(response: httpx.Response) -> bool:
    """RFC 7009 says 200 is success; Slack's auth.revoke answers 200 with {"ok": false} on failure."""
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("ok") is False)
