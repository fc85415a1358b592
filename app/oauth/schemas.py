"""The shapes of the OAuth API (CONTRACT.md), and `connection_out`, the one view of a connection that
the OAuth panel, integration pages and the API all show: everything but the tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from app.oauth import providers
from app.oauth.tables import ConnectionStatus


class ConnectionOut(msgspec.Struct):
    id: str
    provider: str
    """The provider's key, e.g. `google` or `sandbox`."""
    account: str
    """The connected account as people know it (usually an email address)."""
    account_id: str
    """The provider's id for the account (the OIDC `sub`, or the provider's own)."""
    status: ConnectionStatus
    """needs_reauth: reconnect it; error: refreshing keeps failing and is retried with backoff."""
    scopes_requested: list[str]
    scopes_granted: list[str]
    scopes_missing: list[str]
    """Requested but not granted by the provider."""
    expires_at: datetime | None
    last_refreshed_at: datetime | None
    next_refresh_at: datetime | None
    last_error: str | None
    created_at: datetime
    revoked_at: datetime | None


class HistoryEntry(msgspec.Struct):
    kind: str
    """connected, reconnected, refreshed, refresh_failed, needs_reauth or disconnected."""
    detail: str
    actor: str
    at: datetime


class ConnectionDetail(ConnectionOut):
    history: list[HistoryEntry]
    """The most recent events first."""


class ConnectionList(msgspec.Struct):
    items: list[ConnectionOut]
    next_cursor: str | None = None


class AuthorizationUrl(msgspec.Struct):
    authorization_url: str
    """Open it in a browser signed in to the portal as an admin of this organisation."""


class Disconnected(msgspec.Struct):
    id: uuid.UUID
    status: str
    """Always `revoked`."""
    revocation: str
    """What happened at the provider, in words."""


def connection_out(row: dict[str, Any]) -> ConnectionOut:
    provider = providers.get(row["provider"])
    requested = provider.split_scopes(row["scopes_requested"]) if provider else row["scopes_requested"].split()
    granted = provider.split_scopes(row["scopes_granted"]) if provider else row["scopes_granted"].split()
    return ConnectionOut(
        id=str(row["id"]),
        provider=row["provider"],
        account=row["account_label"],
        account_id=row["account_id"],
        status=ConnectionStatus(row["status"]),
        scopes_requested=requested,
        scopes_granted=granted,
        scopes_missing=[s for s in requested if s not in granted],
        expires_at=row["expires_at"],
        last_refreshed_at=row["last_refreshed_at"],
        next_refresh_at=row["next_refresh_at"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def connection_detail(row: dict[str, Any], history: list[dict[str, Any]]) -> ConnectionDetail:
    return ConnectionDetail(
        **msgspec.structs.asdict(connection_out(row)), history=[HistoryEntry(**entry) for entry in history]
    )
