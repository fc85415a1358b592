"""Publishing events and reading them back. Publishing always goes through the SQL function
publish_event(), the same path host code uses, so the rules live in one place."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.events import ingest, validation
from app.events.ingest import Outcome
from app.events.tables import Event, EventType
from app.events.validation import EventError, EventIn  # EventError: callers catch it from here


async def known_types() -> dict[str, dict]:
    rows = await EventType.select().where(EventType.deprecated.eq(False)).order_by(EventType.name)
    return {row["name"]: row for row in rows}


async def list_event_types(include_deprecated: bool = False) -> list[dict]:
    query = EventType.select().order_by(EventType.domain).order_by(EventType.name)
    if not include_deprecated:
        query = query.where(EventType.deprecated.eq(False))
    return await query


async def publish_in(conn, org_id: uuid.UUID, event_type: str, payload: dict[str, Any]) -> uuid.UUID:
    """Publish an event of the portal's own (a known type, a payload we built) in the caller's
    transaction, so it commits, or not, with the change it announces."""
    return await conn.fetchval(
        "SELECT publish_event($1, NULL, $2::jsonb, NULL, '{}'::jsonb, $3)", event_type, json.dumps(payload), org_id
    )


async def publish_one(
    org_id: uuid.UUID,
    event_type: Any,
    payload: Any,
    *,
    aggregate_id: Any = None,
    metadata: Any = None,
    user_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> Outcome:
    """Check one event, then publish it (or answer from its idempotency key); raises EventError."""
    event = await validation.check(
        event_type, payload, aggregate_id=aggregate_id, metadata=metadata, user_id=user_id, key=idempotency_key
    )
    (outcome,) = await ingest.publish_many(org_id, [event])
    if outcome.error is not None:
        raise outcome.error
    return outcome


async def publish(
    org_id: uuid.UUID,
    event_type: Any,
    payload: Any,
    *,
    aggregate_id: Any = None,
    metadata: Any = None,
    user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Publish one event and return its id (the CLI's and tests' way in)."""
    outcome = await publish_one(
        org_id, event_type, payload, aggregate_id=aggregate_id, metadata=metadata, user_id=user_id
    )
    assert outcome.event_id is not None
    return outcome.event_id


async def publish_batch(org_id: uuid.UUID, items: list[EventIn | EventError]) -> list[Outcome]:
    """Publish the checked items of a batch in one transaction; the refused ones keep their error."""
    valid = [item for item in items if isinstance(item, EventIn)]
    published = iter(await ingest.publish_many(org_id, valid))
    return [next(published) if isinstance(item, EventIn) else Outcome(error=item) for item in items]


async def recent_events(org_id: uuid.UUID, limit: int = 20) -> list[dict]:
    return (
        await Event.select(Event.id, Event.event_type, Event.aggregate_id, Event.created_at)
        .where(Event.org == org_id)
        .order_by(Event.created_at, ascending=False)
        .order_by(Event.id, ascending=False)
        .limit(limit)
    )


async def count_since(org_id: uuid.UUID, hours: int = 24) -> int:
    since = datetime.now(UTC) - timedelta(hours=hours)
    return await Event.count().where((Event.org == org_id) & (Event.created_at >= since))
