"""Publishing checked events: one statement for any number of them, and idempotency keys claimed in
the same transaction.

Every event still goes through publish_event() (its checks, its row, its two notifications): a batch
calls it once per row of one `SELECT ... FROM unnest(...)`, so 500 events are one round trip and one
commit instead of 500 of each.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from app.core import db
from app.events import idempotency
from app.events.known import KNOWN_TYPES
from app.events.validation import EventError, EventIn, KeyConflict

_PUBLISH = """
SELECT x.n, publish_event(x.type, x.aggregate_id, x.payload::jsonb, x.user_id, x.metadata::jsonb, $1) AS id
FROM unnest($2::text[], $3::uuid[], $4::text[], $5::uuid[], $6::text[])
    WITH ORDINALITY AS x(type, aggregate_id, payload, user_id, metadata, n)
ORDER BY x.n
"""
# One event (POST /events) takes plain parameters: encoding six one-element arrays and unnesting them
# cost the web process and PostgreSQL more than the call itself.
_PUBLISH_ONE = "SELECT publish_event($1, $2, $3::jsonb, $4, $5::jsonb, $6)"
CLAIM_ATTEMPTS = 3


@dataclass(frozen=True)
class Outcome:
    """What became of one event: published (`event_id`), a replay of its key's first event
    (`replayed`, nothing created), or refused (`error`)."""

    event_id: uuid.UUID | None = None
    replayed: bool = False
    error: EventError | None = None


async def publish_many(org_id: uuid.UUID, events: list[EventIn]) -> list[Outcome]:
    """Publish `events` in one transaction; one outcome per event, in order."""
    if not events:
        return []
    try:
        async with db.connection() as conn:
            if not any(event.key for event in events):
                return [Outcome(event_id=event_id) for event_id in await _publish(conn, org_id, events)]
            for attempt in range(CLAIM_ATTEMPTS):
                try:
                    async with conn.transaction():
                        return await _publish_keyed(conn, org_id, events)
                except idempotency.KeyVanished:
                    if attempt == CLAIM_ATTEMPTS - 1:
                        raise
    except asyncpg.InvalidParameterValueError as error:  # publish_event's own checks
        KNOWN_TYPES.forget()  # a type this process thought known is not in event_types
        raise EventError(str(error).removeprefix("publish_event: "), "type") from None
    raise AssertionError("unreachable")


async def _publish(conn: asyncpg.Connection, org_id: uuid.UUID, events: list[EventIn]) -> list[uuid.UUID]:
    if not events:
        return []
    if len(events) == 1:
        (event,) = events
        args = (event.type, event.aggregate_id, event.payload, event.user_id, event.metadata, org_id)
        return [await conn.fetchval(_PUBLISH_ONE, *args)]
    rows = await conn.fetch(
        _PUBLISH,
        org_id,
        [event.type for event in events],
        [event.aggregate_id for event in events],
        [event.payload for event in events],
        [event.user_id for event in events],
        [event.metadata for event in events],
    )
    return [row["id"] for row in rows]


async def _publish_keyed(conn: asyncpg.Connection, org_id: uuid.UUID, events: list[EventIn]) -> list[Outcome]:
    """Claim the keys, publish what has no key or a newly claimed one, answer the rest from the key's
    first request. A key repeated within `events` is claimed by its first event."""
    first: dict[str, int] = {}
    for index, event in enumerate(events):
        if event.key is not None:
            first.setdefault(event.key, index)
    earlier = await idempotency.claim(conn, org_id, {key: events[index].request_hash for key, index in first.items()})
    fresh = [i for i, e in enumerate(events) if e.key is None or (first[e.key] == i and e.key not in earlier)]
    outcomes: dict[int, Outcome] = {}
    published: dict[str, uuid.UUID] = {}
    for index, event_id in zip(fresh, await _publish(conn, org_id, [events[i] for i in fresh]), strict=True):
        outcomes[index] = Outcome(event_id=event_id)
        key = events[index].key
        if key is not None:
            published[key] = event_id
            earlier[key] = idempotency.Earlier(events[index].request_hash, event_id)
    await idempotency.fill(conn, org_id, published)
    return [outcomes.get(i) or _replay(event, earlier) for i, event in enumerate(events)]


def _replay(event: EventIn, earlier: dict[str, idempotency.Earlier]) -> Outcome:
    assert event.key is not None  # only keyed events are answered from their key
    first = earlier[event.key]
    if first.request_hash != event.request_hash:
        return Outcome(
            error=KeyConflict(
                f"The idempotency key {event.key!r} was used for a different request within the last "
                f"{idempotency.ttl_hours()} h; send a new key for a new event.",
                "idempotency_key",
            )
        )
    return Outcome(event_id=first.event_id, replayed=True)
