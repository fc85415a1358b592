"""`intime keys rotate`: re-seal every secret in the database with the newest encryption key.

Put a new key first in INTIME_ENCRYPTION_KEYS (keeping the old ones after it), restart, run this,
then drop the old keys. Each batch commits on its own and only rows still sealed with an older key are
picked, so an interrupted run simply continues where it stopped when started again. A row changed
meanwhile (its value no longer the one read) is left for the next batch rather than overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from app.core import db
from app.core.crypto import DecryptionError, get_keyring

BATCH = 500


@dataclass(frozen=True)
class Sealed:
    table: str
    column: str
    context: Callable[[object], str]  # the row id -> the associated data the value is bound to
    json_map: bool = False  # a JSON object whose values are each sealed (webhook custom headers)


# Every sealed column; a new one must be added here (tests/test_oauth.py checks that every sealed value
# in a populated database is found by the rotation).
SEALED = (
    Sealed("webhooks", "secret", lambda i: f"webhook:{i}"),
    Sealed("webhooks", "previous_secret", lambda i: f"webhook:{i}"),
    Sealed("webhooks", "headers", lambda i: f"webhook:{i}:header", json_map=True),
    Sealed("oauth_clients", "client_secret", lambda i: f"oauth-client:{i}"),
    Sealed("oauth_connections", "access_token", lambda i: f"oauth-connection:{i}:access"),
    Sealed("oauth_connections", "refresh_token", lambda i: f"oauth-connection:{i}:refresh"),
    Sealed("integration_providers", "credentials", lambda i: f"integration-provider:{i}"),
)


async def rotate(progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Re-seal in batches; returns how many values were re-sealed per table.column."""
    ring = get_keyring()
    primary = ring.primary_id
    done: dict[str, int] = {}
    unreadable: list[str] = []
    for sealed in SEALED:
        name = f"{sealed.table}.{sealed.column}"
        done[name] = 0
        if sealed.json_map:
            where = (
                f"{sealed.column} <> '{{}}'::jsonb AND EXISTS (SELECT 1 FROM jsonb_each_text({sealed.column}) h "  # noqa: S608
                "WHERE split_part(h.value, '.', 2) <> $1)"
            )
        else:
            where = f"{sealed.column} IS NOT NULL AND split_part({sealed.column}, '.', 2) <> $1"
        last = None
        while True:
            async with db.connection() as conn, conn.transaction():
                rows = await conn.fetch(
                    f"SELECT id, {sealed.column}::text AS value FROM {sealed.table} WHERE {where} "  # noqa: S608
                    f"AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT {BATCH} FOR UPDATE",
                    primary,
                    last,
                )
                for row in rows:
                    last = row["id"]
                    context = sealed.context(row["id"])
                    try:
                        await _reseal(conn, sealed, row, context)
                    except DecryptionError:
                        unreadable.append(f"{name} of {row['id']}")
                        continue
                    done[name] += 1
            if progress and rows:
                progress(name, done[name])
            if len(rows) < BATCH:
                break
    if unreadable:
        raise DecryptionError(
            f"{len(unreadable)} values are sealed with a key that is not in INTIME_ENCRYPTION_KEYS any more "
            f"(first: {unreadable[0]}); everything else was re-sealed"
        )
    return done


async def _reseal(conn, sealed: Sealed, row, context: str) -> None:
    ring = get_keyring()
    if sealed.json_map:
        values = json.loads(row["value"])
        resealed = {
            k: ring.seal(ring.open(v, context), context) if ring.needs_rotation(v) else v for k, v in values.items()
        }
        await conn.execute(
            f"UPDATE {sealed.table} SET {sealed.column} = $2::jsonb WHERE id = $1",  # noqa: S608
            row["id"],
            json.dumps(resealed),
        )
    else:
        await conn.execute(
            f"UPDATE {sealed.table} SET {sealed.column} = $2 WHERE id = $1",  # noqa: S608
            row["id"],
            ring.seal(ring.open(row["value"], context), context),
        )
