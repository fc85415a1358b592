"""The read side of integrations, for pages and the API: each integration with its providers and
their health, the failover audit trail, and the recent checks behind a provider's history strip.

Credentials are never read out: a provider shows only whether it has some (`has_credentials`).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from app.core import db
from app.core.problems import NotFound
from app.integrations import ratelimit
from app.integrations.failover import failover_config
from app.integrations.state import ProviderView, active_of, load, owned


async def overview(
    org_id: uuid.UUID,
    integration_id: uuid.UUID | None = None,
    *,
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Integrations with their providers (never credentials), which one is active, and each provider's
    health: its breaker, its last check and its rate-limit use. All of them by name (pages), one, or a
    page of them in creation order after `after` (the API's keyset pagination)."""
    async with db.connection() as conn:
        if integration_id is None and limit is None:
            rows = await conn.fetch("SELECT id FROM integrations WHERE org_id = $1 ORDER BY name", org_id)
            ids = [r["id"] for r in rows]
        elif integration_id is None:
            at, last = after or (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))
            rows = await conn.fetch(
                "SELECT id FROM integrations WHERE org_id = $1 AND (created_at, id) > ($2, $3) "
                "ORDER BY created_at, id LIMIT $4",
                org_id,
                at,
                last,
                limit,
            )
            ids = [r["id"] for r in rows]
        else:
            ids = [(await owned(conn, org_id, integration_id))["id"]]
        out = []
        for one in ids:
            integration, views = await load(conn, one)
            active = active_of(integration, views)
            uses = await asyncio.gather(*(_used_this_hour(view) for view in views))
            out.append(
                {
                    "id": str(integration["id"]),
                    "name": integration["name"],
                    "kind": integration["kind"],
                    "description": integration["description"],
                    "active_provider": active.row["name"] if active else None,
                    "healthy": active is not None and active.usable,
                    "failover": failover_config(integration),
                    "providers": [_provider_out(view, active, used) for view, used in zip(views, uses, strict=True)],
                    "created_at": integration["created_at"],
                }
            )
    return out


def _provider_out(view: ProviderView, active: ProviderView | None, used: int | None) -> dict[str, Any]:
    row = view.row
    return {
        "id": str(view.id),
        "name": row["name"],
        "kind": row["kind"],
        "priority": row["priority"],
        "endpoint_url": row["endpoint_url"],
        "health_url": row["health_url"],
        "enabled": row["enabled"],
        "active": active is not None and view.id == active.id,
        "has_credentials": row["credentials"] is not None,
        "oauth_connection_id": str(row["oauth_connection_id"]) if row["oauth_connection_id"] else None,
        "circuit": view.breaker.state,
        "circuit_retry_at": view.breaker.retry_at,
        "last_checked_at": row["last_checked_at"],
        "last_ok": row["last_ok"],
        "last_latency_ms": row["last_latency_ms"],
        "last_error": row["last_error"],
        "rate_limit_per_hour": row["rate_limit_per_hour"],
        "used_this_hour": used,
    }


async def _used_this_hour(view: ProviderView) -> int | None:
    limit = view.row["rate_limit_per_hour"]
    return await ratelimit.used_this_hour(view.id, limit) if limit else None


async def provider(org_id: uuid.UUID, integration_id: uuid.UUID, provider_id: uuid.UUID) -> dict[str, Any]:
    """One provider as pages and the API show it (whether credentials are set, never what they are)."""
    [integration] = await overview(org_id, integration_id)
    return pick_provider(integration, provider_id)


def pick_provider(integration: dict[str, Any], provider_id: uuid.UUID) -> dict[str, Any]:
    """One provider out of an integration's overview already read."""
    found = next((p for p in integration["providers"] if p["id"] == str(provider_id)), None)
    if found is None:
        raise NotFound("No such provider in this integration.")
    return found


async def audit_trail(org_id: uuid.UUID, integration_id: uuid.UUID, limit: int = 50) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        await owned(conn, org_id, integration_id)
        rows = await conn.fetch(
            # The names as they were at the switch (the provider may since be renamed or removed).
            "SELECT kind, trigger, reason, actor, at, from_provider_name AS from_provider, "
            "to_provider_name AS to_provider FROM failover_events WHERE integration_id = $1 ORDER BY at DESC LIMIT $2",
            integration_id,
            limit,
        )
    return [dict(r) for r in rows]


async def health_strips(org_id: uuid.UUID, integration_id: uuid.UUID, per_provider: int = 40) -> dict[str, list]:
    """The last checks of each provider, oldest first, for the history strip."""
    async with db.connection() as conn:
        await owned(conn, org_id, integration_id)
        rows = await conn.fetch(
            "SELECT c.provider_id, c.at, c.ok, c.latency_ms, c.status_code, c.error_class FROM integration_providers p "
            "CROSS JOIN LATERAL (SELECT * FROM health_checks h WHERE h.provider_id = p.id ORDER BY h.at DESC "
            "LIMIT $2) c WHERE p.integration_id = $1",
            integration_id,
            per_provider,
        )
    strips: dict[str, list] = {}
    for row in sorted(rows, key=lambda r: r["at"]):
        strips.setdefault(str(row["provider_id"]), []).append(dict(row))
    return strips
