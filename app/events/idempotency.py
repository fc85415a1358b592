"""Idempotency keys: the same key, in one organisation and within the TTL, publishes one event.

A key is claimed by inserting its row in the transaction that publishes the event, so the rule holds
across web processes: PostgreSQL's unique (org_id, key) makes a second claim wait for the first
transaction and then see its row (committed: a replay; rolled back: the second claims the key). A
claimed row's event_id is filled in before the same transaction commits, so no other transaction
ever sees a key without its event. A key older than the TTL is claimed anew, as if it were new.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from app.core import db
from app.core.settings import get_settings

PRUNE_BATCH = 5000

_CLAIM = """
INSERT INTO event_idempotency_keys AS k (org_id, key, request_hash, event_id, created_at)
SELECT $1, x.key, x.hash, NULL, now() FROM unnest($2::text[], $3::bytea[]) AS x(key, hash)
ON CONFLICT (org_id, key) DO UPDATE
    SET request_hash = excluded.request_hash, event_id = NULL, created_at = excluded.created_at
    WHERE k.created_at < now() - make_interval(hours => $4)
RETURNING k.key
"""
_READ = "SELECT key, request_hash, event_id FROM event_idempotency_keys WHERE org_id = $1 AND key = ANY($2::text[])"
_FILL = """
UPDATE event_idempotency_keys AS k SET event_id = x.id
FROM unnest($2::text[], $3::uuid[]) AS x(key, id)
WHERE k.org_id = $1 AND k.key = x.key
"""
_PRUNE = """
DELETE FROM event_idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM event_idempotency_keys WHERE created_at < now() - make_interval(hours => $1)
    ORDER BY created_at LIMIT $2
))
"""


class KeyVanished(Exception):
    """A key was live when claimed and gone when read (it expired and was pruned in between): the
    caller's transaction is rolled back and tried again."""


@dataclass(frozen=True)
class Earlier:
    """A live key's first request: what it published and the hash a replay must match."""

    request_hash: bytes
    event_id: uuid.UUID


def ttl_hours() -> int:
    return get_settings().events.idempotency_ttl_hours


async def claim(conn: asyncpg.Connection, org_id: uuid.UUID, keys: dict[str, bytes]) -> dict[str, Earlier]:
    """Claim `keys` (key -> request hash) in the caller's transaction; returns the keys that were
    live already, with their first request. Keys are claimed in sorted order, so that two batches
    sharing keys wait for each other instead of deadlocking."""
    ordered = sorted(keys)
    claimed = await conn.fetch(_CLAIM, org_id, ordered, [keys[key] for key in ordered], ttl_hours())
    taken = [key for key in ordered if key not in {row["key"] for row in claimed}]
    if not taken:
        return {}
    rows = await conn.fetch(_READ, org_id, taken)
    if len(rows) < len(taken):
        raise KeyVanished(", ".join(sorted(set(taken) - {row["key"] for row in rows})))
    return {row["key"]: Earlier(row["request_hash"], row["event_id"]) for row in rows}


async def fill(conn: asyncpg.Connection, org_id: uuid.UUID, published: dict[str, uuid.UUID]) -> None:
    """Record the event each newly claimed key published (same transaction as the claim)."""
    if published:
        await conn.execute(_FILL, org_id, list(published), list(published.values()))


async def prune(limit: int = PRUNE_BATCH) -> int:
    """Delete up to `limit` keys past the TTL (the scheduler's sweep; an expired key counts as new
    whether or not it has been pruned yet)."""
    async with db.connection() as conn:
        status = await conn.execute(_PRUNE, ttl_hours(), limit)
    return int(status.rsplit(" ", 1)[1])
