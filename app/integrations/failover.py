"""How failover picks a provider: traffic goes to one provider at a time, the integration's active one.

Health checks and real calls both feed each provider's circuit breaker; `evaluate` then decides, under
a per-integration row lock so that two processes never switch at once:
- **failover** (automatic mode): the active provider's breaker is open, or it refused our credentials;
  traffic moves to the next provider by priority that is usable (`next_usable`: enabled, circuit
  letting calls through, last check not failed, credentials not refused), wrapping round;
- **failback** (automatic mode): the primary (the first enabled provider by priority) has been healthy
  for `failback_after_seconds`; traffic returns to it. Healthy means checked and up with its circuit
  closed, not merely never checked: traffic should not bounce back to a provider nobody has seen work.
An admin can move traffic by hand (`trigger_failover`). Every switch writes a `failover_events` row and
publishes `integration.failover` or `integration.failback` (`switch`).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core import db, problems
from app.core.problems import NotFound
from app.events import services as events
from app.integrations.state import ProviderView, active_of, load, owned, primary_of

log = logging.getLogger("intime.integrations")

FAILOVER_LIMITS = {
    "failback_after_seconds": (0, 86_400),
    "health_interval_seconds": (5, 86_400),
    "breaker_failure_threshold": (1, 1000),
    "breaker_failure_rate_percent": (1, 100),
    "breaker_min_calls": (1, 100_000),
    "breaker_window_seconds": (5, 86_400),
    "breaker_cooldown_seconds": (1, 86_400),
    "breaker_cooldown_max_seconds": (1, 604_800),
    "breaker_probe_successes": (1, 100),
}
MODES = {"failover_mode": ("automatic", "manual"), "failback_mode": ("automatic", "manual")}


async def evaluate(integration_id: uuid.UUID, *, now: float | None = None) -> str | None:
    """Fail over or back if the providers' health says so; returns "failover", "failback" or None.
    `now` (Unix seconds) stands in for the clock, for the breakers and the failback delay alike."""
    async with db.connection() as conn, conn.transaction():
        integration, views = await load(conn, integration_id, lock=True, now=now)
        active = active_of(integration, views)
        primary = primary_of(views)
        if primary is None:
            return None
        moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
        # Failback bookkeeping: how long the primary has been healthy without a break.
        primary_healthy = (
            primary.breaker.state == "closed"
            and primary.row["last_ok"] is True
            and primary.row["credentials_rejected_at"] is None
        )
        since = integration["primary_healthy_since"]
        if primary_healthy and since is None:
            since = moment
        elif not primary_healthy:
            since = None
        if since != integration["primary_healthy_since"]:
            await conn.execute(
                "UPDATE integrations SET primary_healthy_since = $2 WHERE id = $1", integration_id, since
            )
        if active is None:
            return None
        rejected = active.row["credentials_rejected_at"] is not None
        if (not active.breaker.allows_calls or rejected) and integration["failover_mode"] == "automatic":
            target = next_usable(views, after=active)
            if target is not None:
                trips = active.breaker.trips
                reason = (
                    f"{active.row['name']} refused our credentials"
                    if rejected
                    else f"{active.row['name']}'s circuit opened" + (f" (trip {trips} in a row)" if trips > 1 else "")
                )
                await switch(conn, integration, active, target, "failover", "automatic", reason, "system")
                return "failover"
        if (
            active.id != primary.id
            and integration["failback_mode"] == "automatic"
            and since is not None
            and moment - since >= timedelta(seconds=integration["failback_after_seconds"])
        ):
            reason = f"{primary.row['name']} healthy for {integration['failback_after_seconds']} s"
            await switch(conn, integration, active, primary, "failback", "automatic", reason, "system")
            return "failback"
    return None


def next_usable(views: list[ProviderView], after: ProviderView) -> ProviderView | None:
    """The next usable provider in priority order after `after`, wrapping round to those before it."""
    index = next((n for n, v in enumerate(views) if v.id == after.id), -1)
    for view in views[index + 1 :] + views[: max(index, 0)]:
        if view.id != after.id and view.usable:
            return view
    return None


async def switch(conn, integration, source: ProviderView | None, target: ProviderView, kind, trigger, reason, actor):
    """Move traffic to `target` in the caller's transaction, with its audit row and its event, so that
    a switch is never seen without the record of why it happened."""
    await conn.execute(
        "UPDATE integrations SET active_provider_id = $2, updated_at = now() WHERE id = $1",
        integration["id"],
        target.id,
    )
    await conn.execute(
        "INSERT INTO failover_events (id, integration_id, org_id, kind, from_provider_id, to_provider_id, trigger, "
        "reason, actor, from_provider_name, to_provider_name, at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())",
        uuid.uuid4(),
        integration["id"],
        integration["org_id"],
        kind,
        source.id if source else None,
        target.id,
        trigger,
        reason[:1000],
        actor[:200],
        source.row["name"] if source else None,
        target.row["name"],
    )
    payload = {
        "integration_id": str(integration["id"]),
        "from_provider": source.row["name"] if source else None,
        "to_provider": target.row["name"],
        "trigger": trigger,
        "reason": reason[:300],
    }
    await events.publish_in(conn, integration["org_id"], f"integration.{kind}", payload)
    log.info(
        "integration %s: %s from %s to %s (%s)",
        integration["id"],
        kind,
        payload["from_provider"],
        target.row["name"],
        reason,
    )


async def trigger_failover(
    org_id: uuid.UUID, integration_id: uuid.UUID, reason: str, actor: str, to_provider_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """An admin's "Trigger failover": traffic moves to `to_provider_id`, or else to the next usable
    provider after the active one, audited. Moving it to the primary is a (manual) failback."""
    reason = reason.strip()
    if not reason:
        raise problems.Problem(
            422,
            "Say why you are failing over (the reason goes into the audit trail).",
            [{"field": "reason", "message": "is required"}],
        )
    async with db.connection() as conn, conn.transaction():
        integration, views = await load(conn, integration_id, lock=True)
        if integration["org_id"] != org_id:
            raise NotFound("No such integration in this organisation.")
        active = active_of(integration, views)
        target: ProviderView | None
        if to_provider_id is not None:
            target = _chosen_target(views, active, to_provider_id)
        else:
            target = next_usable(views, after=active) if active else next((v for v in views if v.usable), None)
        if target is None:
            raise problems.Problem(409, "No other provider is enabled and healthy: there is nowhere to fail over to.")
        kind = "failback" if target.id == next(v.id for v in views if v.row["enabled"]) else "failover"
        await switch(conn, integration, active, target, kind, "manual", reason[:1000], actor)
    return {"from": active.row["name"] if active else None, "to": target.row["name"], "kind": kind}


def _chosen_target(views: list[ProviderView], active: ProviderView | None, to_provider_id: uuid.UUID) -> ProviderView:
    """The provider an admin chose to move traffic to, if it can take it; else a 4xx saying why not."""
    target = next((v for v in views if v.id == to_provider_id), None)
    field = [{"field": "to_provider_id", "message": "is not a provider that can take traffic now"}]
    if target is None:
        raise problems.Problem(422, "to_provider_id is not a provider of this integration.", field)
    name = target.row["name"]
    if active is not None and target.id == active.id:
        raise problems.Problem(409, f"Traffic already goes to {name}.", field)
    if not target.row["enabled"]:
        raise problems.Problem(409, f"{name} is disabled: enable it first.", field)
    if not target.usable:
        why = (
            "refused our credentials"
            if target.row["credentials_rejected_at"] is not None
            else f"is failing (circuit {target.breaker.state.replace('_', ' ')}, last check "
            f"{'down' if target.row['last_ok'] is False else 'up'})"
        )
        raise problems.Problem(409, f"{name} {why}: traffic would come straight back. Wait for it to recover.", field)
    return target


# --- The failover settings ----------------------------------------------------------------------------


def failover_config(integration) -> dict[str, Any]:
    return {name: integration[name] for name in (*MODES, *FAILOVER_LIMITS)}


async def update_failover(org_id: uuid.UUID, integration_id: uuid.UUID, data: Any) -> dict[str, Any]:
    """Replace the failover settings; every field is checked, and nothing is saved unless all are good."""
    if not isinstance(data, dict):
        raise problems.Problem(422, "The failover settings are a JSON object.")
    errors = []
    unknown = set(data) - set(MODES) - set(FAILOVER_LIMITS)
    errors += [{"field": name, "message": "is not a failover setting"} for name in sorted(unknown)]
    values: dict[str, Any] = {}
    for name, allowed in MODES.items():
        if name in data:
            if data[name] not in allowed:
                errors.append({"field": name, "message": f"is one of {', '.join(allowed)}"})
            else:
                values[name] = data[name]
    for name, (low, high) in FAILOVER_LIMITS.items():
        if name in data:
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                errors.append({"field": name, "message": f"is a whole number from {low:,} to {high:,}"})
            else:
                values[name] = value
    async with db.connection() as conn, conn.transaction():
        current = await owned(conn, org_id, integration_id)
        merged = failover_config(current) | values
        if merged["breaker_cooldown_max_seconds"] < merged["breaker_cooldown_seconds"]:
            errors.append({"field": "breaker_cooldown_max_seconds", "message": "is at least the cooldown"})
        if errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise problems.Problem(422, f"The failover settings are not valid: {detail}", errors)
        if values:
            assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(values, start=2))
            await conn.execute(
                f"UPDATE integrations SET {assignments}, updated_at = now() WHERE id = $1",  # noqa: S608
                integration_id,
                *values.values(),
            )
    return merged
