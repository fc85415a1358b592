"""Idempotent publishing (issue 14): `event_idempotency_keys` remembers, per organisation, which event
an `Idempotency-Key` published and a hash of the request that did it. The key is claimed in the same
transaction as the event (app.events.idempotency), so two processes sending the same key at once
make exactly one event: the second waits on the first's row and then sees it.

No Piccolo table class: the key is (org_id, key), which Piccolo cannot declare, and only the raw SQL
of app.events.idempotency reads and writes it. No foreign key to events either: it would cost a
lookup on every keyed publish, and a replay of a pruned event still names the id it published."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-03T12:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "event_idempotency_keys"

FORWARDS = [
    """CREATE TABLE IF NOT EXISTS event_idempotency_keys (
        org_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE ON UPDATE CASCADE,
        key varchar(255) NOT NULL,
        request_hash bytea NOT NULL,
        event_id uuid NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (org_id, key)
    )""",
    # The scheduler's prune reads the oldest keys first.
    "CREATE INDEX IF NOT EXISTS event_idempotency_keys_created_idx ON event_idempotency_keys (created_at)",
]
BACKWARDS = ["DROP TABLE IF EXISTS event_idempotency_keys"]


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="events", description=DESCRIPTION)

    async def run():
        for statement in FORWARDS:
            await RawTable.raw(statement)

    async def run_backwards():
        for statement in BACKWARDS:
            await RawTable.raw(statement)

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
