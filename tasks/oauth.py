"""OAuth actors: refresh one connection's tokens (the scheduler enqueues those that are due)."""

from __future__ import annotations

import uuid

import dramatiq

from app.oauth import refresh


# A failed refresh is recorded and rescheduled by the service itself (with backoff); Dramatiq's own
# retries cover only unexpected errors such as a database restart.
@dramatiq.actor(queue_name="oauth", max_retries=3, min_backoff=1000, max_backoff=30_000, time_limit=60_000)
async def refresh_oauth_token(connection_id: str) -> None:
    await refresh.refresh(uuid.UUID(connection_id))
