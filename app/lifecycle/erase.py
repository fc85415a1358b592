"""Erasure of events' payloads on request (GDPR): `intime events erase` and
`DELETE /api/v1/events/{id}/payload` both call `erase`.

What goes: each event's payload and metadata (set to `{}`), and the response body of every attempt of
every delivery of the event (a receiver's answer may echo the payload), marked `body_removed =
'erasure'`. What stays: ids, types, timings, statuses, request URL and headers (they carry no payload:
the signature headers are HMACs of the body, not the body), so the debugger still shows that something
was sent, and when. A delivery still waiting to be sent goes to the DLQ (`payload_erased`): it would go
out empty. One that is being sent while its event is erased records its answer without the body, and
is dead-lettered unsent if it is retried (statements.py: CLAIM, RECORD_SUCCESSES, INSERT_ATTEMPT).

An aggregate may have thousands of events: they are erased BATCH at a time, one short transaction
each, so no request holds locks that the engine waits on. Erasing again is harmless (nothing is left
to remove) and answers the same way; every request is audited, one `erasures` row each.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from app.core import db
from app.core.problems import NotFound
from app.webhooks import statements

BATCH = 500

# The events of an aggregate, in id order after $3 (events_aggregate_idx finds them).
_AGGREGATE_BATCH = "SELECT id FROM events WHERE org_id = $1 AND aggregate_id = $2 AND id > $3 ORDER BY id LIMIT $4"
# Also marked fanned out: one not yet turned into deliveries never will be (there is nothing to send).
_ERASE_EVENTS = (
    "UPDATE events SET payload = '{}'::jsonb, metadata = '{}'::jsonb, erased_at = now(), "
    "fanned_out_at = coalesce(fanned_out_at, now()) "
    "WHERE id = ANY($1::uuid[]) AND org_id = $2 AND erased_at IS NULL"
)
# Every attempt of every delivery of the events that still holds a body or is not yet marked; one
# removed earlier by retention is marked as erased too, which is now the stronger reason.
_CLEAR_ATTEMPTS = (
    "UPDATE delivery_attempts a SET response_body = NULL, body_removed = 'erasure' FROM webhook_deliveries d "
    "WHERE d.event_id = ANY($1::uuid[]) AND a.delivery_id = d.id "
    "AND (a.response_body IS NOT NULL OR a.body_removed IS DISTINCT FROM 'erasure')"
)
_AUDIT = (
    "INSERT INTO erasures (id, org_id, actor, event_id, aggregate_id, events, attempts, at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, now()) RETURNING at"
)


class EraseError(ValueError):
    """A request that names no events, or both an event and an aggregate."""


@dataclass(frozen=True)
class Erasure:
    id: uuid.UUID
    """The audit row (`erasures`)."""
    events: int
    """Events the request named (erased now or before)."""
    attempts: int
    """Attempts whose response body this request removed."""
    deliveries_stopped: int
    """Deliveries that were still waiting and went to the DLQ (payload_erased) instead of being sent."""
    erased_at: datetime | None
    """When the named event's payload was erased (for an event id; the first erasure's time)."""
    at: datetime
    """When this request ran."""

    def as_dict(self) -> dict[str, object]:
        return {
            "erasure_id": str(self.id),
            "events": self.events,
            "attempts": self.attempts,
            "deliveries_stopped": self.deliveries_stopped,
            "erased_at": self.erased_at.isoformat() if self.erased_at else None,
        }


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


async def erase(
    org_id: uuid.UUID,
    *,
    event_id: uuid.UUID | None = None,
    aggregate_id: uuid.UUID | None = None,
    actor: str,
) -> Erasure:
    """Erase the payload of one event of the organisation, or of every event of one aggregate.
    Raises NotFound for an event id that is not the organisation's; an aggregate without events is
    answered (and audited) with zero counts."""
    if (event_id is None) == (aggregate_id is None):
        raise EraseError("Name either one event or one aggregate to erase.")
    events = attempts = stopped = 0
    erased_at = None
    if event_id is not None:
        async with db.connection() as conn:
            found = await conn.fetchval("SELECT true FROM events WHERE id = $1 AND org_id = $2", event_id, org_id)
        if not found:
            raise NotFound("No such event in this organisation.")
        done = await _erase_batch(org_id, [event_id])
        events, attempts, stopped = 1, done[0], done[1]
    else:
        after = uuid.UUID(int=0)
        while True:
            async with db.connection() as conn:
                ids = [row["id"] for row in await conn.fetch(_AGGREGATE_BATCH, org_id, aggregate_id, after, BATCH)]
            if not ids:
                break
            done = await _erase_batch(org_id, ids)
            events, attempts, stopped, after = events + len(ids), attempts + done[0], stopped + done[1], ids[-1]
            if len(ids) < BATCH:
                break
    async with db.connection() as conn:
        erasure_id = uuid.uuid4()
        at = await conn.fetchval(_AUDIT, erasure_id, org_id, actor[:200], event_id, aggregate_id, events, attempts)
        if event_id is not None:
            erased_at = await conn.fetchval("SELECT erased_at FROM events WHERE id = $1", event_id)
    return Erasure(erasure_id, events, attempts, stopped, erased_at, at)


async def _erase_batch(org_id: uuid.UUID, ids: list[uuid.UUID]) -> tuple[int, int]:
    """One short transaction: the events first (their row locks order this against fan-out), then what
    waits to be sent, then the attempts' bodies. Returns (attempts cleared, deliveries stopped)."""
    async with db.connection() as conn:
        async with conn.transaction():
            await conn.execute(_ERASE_EVENTS, ids, org_id)
            stopped = _count(await conn.execute(statements.ERASED_TO_DLQ, ids))
            attempts = _count(await conn.execute(_CLEAR_ATTEMPTS, ids))
        # An answer recorded by a statement that began before the erasure committed (so it did not see
        # it) committed since: taken again, now that every later recording sees the erasure.
        attempts += _count(await conn.execute(_CLEAR_ATTEMPTS, ids))
    return attempts, stopped
