"""Publishing events and reading them back. Publishing always goes through the SQL function
publish_event(), the same path host code uses, so the rules live in one place."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from app.events.tables import Event, EventType

MAX_PAYLOAD_BYTES = 256 * 1024


class EventError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PublishedEvent:
    id: uuid.UUID


async def known_types() -> dict[str, dict]:
    rows = await EventType.select().where(EventType.deprecated.eq(False)).order_by(EventType.name)
    return {row["name"]: row for row in rows}


async def list_event_types(include_deprecated: bool = False) -> list[dict]:
    query = EventType.select().order_by(EventType.domain).order_by(EventType.name)
    if not include_deprecated:
        query = query.where(EventType.deprecated.eq(False))
    return await query


JSON_KINDS = {
    type(None): "null",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def _check_object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        kind = JSON_KINDS.get(type(value), type(value).__name__)
        raise EventError(f"{field} must be a JSON object, not {kind}.", field)
    return value


async def publish_in(conn, org_id: uuid.UUID, event_type: str, payload: dict[str, Any]) -> uuid.UUID:
    """Publish an event of the portal's own (a known type, a payload we built) in the caller's
    transaction, so it commits, or not, with the change it announces."""
    return await conn.fetchval(
        "SELECT publish_event($1, NULL, $2::jsonb, NULL, '{}'::jsonb, $3)", event_type, json.dumps(payload), org_id
    )


async def publish(
    org_id: uuid.UUID,
    event_type: str,
    payload: Any,
    *,
    aggregate_id: uuid.UUID | str | None = None,
    metadata: Any = None,
    user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Check the input so the caller gets a field-level message, then call publish_event()."""
    if not isinstance(event_type, str) or not event_type:
        raise EventError("type is required, e.g. job.created.", "type")
    if not await EventType.exists().where((EventType.name == event_type) & EventType.deprecated.eq(False)):
        raise EventError(f"Unknown event type {event_type!r}; GET /api/v1/event-types lists the catalog.", "type")
    body = json.dumps(_check_object(payload, "payload"))
    if len(body) > MAX_PAYLOAD_BYTES:
        raise EventError(f"payload is larger than {MAX_PAYLOAD_BYTES // 1024} KiB.", "payload")
    meta = json.dumps(_check_object(metadata if metadata is not None else {}, "metadata"))
    if aggregate_id is not None and not isinstance(aggregate_id, uuid.UUID):
        try:
            aggregate_id = uuid.UUID(str(aggregate_id))
        except ValueError:
            raise EventError(f"aggregate_id {aggregate_id!r} is not a UUID.", "aggregate_id") from None
    try:
        rows = await Event.raw(
            "SELECT publish_event({}, {}, {}::jsonb, {}, {}::jsonb, {}) AS id",
            event_type,
            aggregate_id,
            body,
            user_id,
            meta,
            org_id,
        )
    except asyncpg.exceptions.InvalidParameterValueError as error:  # the SQL function's own checks
        raise EventError(str(error).removeprefix("publish_event: "), "type") from None
    return rows[0]["id"]


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
