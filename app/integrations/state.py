"""What an integration's state is: its row, its providers in priority order, each with its circuit
breaker's state, and which provider traffic goes to now.

Every decision (failover, failback, a call, a page) starts from `load`, so they all see the same
picture: the providers' rows from PostgreSQL and their breakers from Redis, read together.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from app.core.problems import NotFound
from app.integrations import breaker
from app.integrations.breaker import BreakerPolicy


def credentials_context(provider_id: uuid.UUID) -> str:
    """Sealed credentials are bound to their provider, so a copied ciphertext opens nowhere else."""
    return f"integration-provider:{provider_id}"


def policy_of(integration) -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=integration["breaker_failure_threshold"],
        failure_rate=integration["breaker_failure_rate_percent"] / 100,
        min_calls=integration["breaker_min_calls"],
        window_seconds=integration["breaker_window_seconds"],
        cooldown_seconds=integration["breaker_cooldown_seconds"],
        cooldown_max_seconds=integration["breaker_cooldown_max_seconds"],
        probe_successes=integration["breaker_probe_successes"],
    )


@dataclass
class ProviderView:
    row: dict[str, Any]
    breaker: breaker.BreakerState

    @property
    def id(self) -> uuid.UUID:
        return self.row["id"]

    @property
    def usable(self) -> bool:
        """Can take traffic: enabled, its circuit lets calls through, its last check did not fail (never
        checked yet counts: better than nowhere), and it has not refused our credentials."""
        return (
            bool(self.row["enabled"])
            and self.breaker.allows_calls
            and self.row["last_ok"] is not False
            and self.row["credentials_rejected_at"] is None
        )


async def load(conn, integration_id: uuid.UUID, *, lock: bool = False, now: float | None = None):
    """The integration and its providers; `lock` holds the row against other switches till commit.
    `now` (Unix seconds) is the breakers' clock: tests pass one instead of sleeping through a cooldown."""
    query = (
        "SELECT * FROM integrations WHERE id = $1 FOR UPDATE" if lock else "SELECT * FROM integrations WHERE id = $1"
    )
    integration = await conn.fetchrow(query, integration_id)
    if integration is None:
        raise NotFound("No such integration.")
    rows = await conn.fetch(
        "SELECT * FROM integration_providers WHERE integration_id = $1 ORDER BY priority, created_at", integration_id
    )
    policy = policy_of(integration)
    states = await asyncio.gather(*(breaker.state(row["id"], policy, now=now) for row in rows))
    views = [ProviderView(dict(row), state) for row, state in zip(rows, states, strict=True)]
    return integration, views


def active_of(integration, views: list[ProviderView]) -> ProviderView | None:
    """The provider traffic goes to: the chosen one while it is enabled, else the first enabled one."""
    chosen = next((v for v in views if v.id == integration["active_provider_id"]), None)
    if chosen is not None and chosen.row["enabled"]:
        return chosen
    return next((v for v in views if v.row["enabled"]), None)


def primary_of(views: list[ProviderView]) -> ProviderView | None:
    """The primary: the first enabled provider by priority, where traffic belongs when it is healthy."""
    return next((v for v in views if v.row["enabled"]), None)


async def owned(conn, org_id: uuid.UUID, integration_id: uuid.UUID):
    row = await conn.fetchrow("SELECT * FROM integrations WHERE id = $1 AND org_id = $2", integration_id, org_id)
    if row is None:
        raise NotFound("No such integration in this organisation.")
    return row
