"""The names of the live event types, kept in each process for a few seconds.

Every publish checks its type against the catalog so that the caller gets a field-level message. A
query for it was a pool round trip on every event (about 12% of a publish's web CPU, issue 14); the
catalog changes only when `intime migrate` syncs it, so each process reads the names at most every
`TTL_SECONDS`. A name it does not know makes it read them again (at most once a second), so a type
just added is known at once. A type deprecated a moment ago may pass for up to `TTL_SECONDS`, which
publish_event() allows anyway: events may still name deprecated types; it refuses only unknown ones.
"""

from __future__ import annotations

import math
import time

from app.core import db

TTL_SECONDS = 10.0
RECHECK_SECONDS = 1.0


class KnownTypes:
    def __init__(self) -> None:
        self._names: frozenset[str] = frozenset()
        self._loaded_at = -math.inf

    async def contains(self, name: str) -> bool:
        age = time.monotonic() - self._loaded_at
        if age > TTL_SECONDS or (name not in self._names and age > RECHECK_SECONDS):
            await self.reload()
        return name in self._names

    async def reload(self) -> None:
        async with db.connection() as conn:
            rows = await conn.fetch("SELECT name FROM event_types WHERE NOT deprecated")
        self._names = frozenset(row["name"] for row in rows)
        self._loaded_at = time.monotonic()

    def forget(self) -> None:
        """Read the catalog again on the next check (this process has just synced it)."""
        self._loaded_at = -math.inf


KNOWN_TYPES = KnownTypes()
