"""Integration actors: a provider's health check (the scheduler enqueues those that are due)."""

from __future__ import annotations

import uuid

import dramatiq

from app.integrations import services


@dramatiq.actor(queue_name="integrations", max_retries=0, time_limit=30_000)
async def run_health_check(provider_id: str) -> None:
    await services.check_provider(uuid.UUID(provider_id))
