"""Reading connections and their history for the pages, the API and integrations: never a token (the
columns below leave them out, so no caller can leak one by printing a row)."""

from __future__ import annotations

import uuid
from typing import Any

from app.core import db
from app.oauth.errors import NotFound
from app.oauth.tables import ConnectionStatus

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
