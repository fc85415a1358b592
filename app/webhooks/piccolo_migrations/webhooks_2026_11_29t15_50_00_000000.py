"""Drop webhook_deliveries_event_idx: (event_id) is the prefix of the unique (event_id, webhook_id)
index, which serves every lookup by event. Each index is written on every claim and every outcome,
because those updates change `status` and so cannot be heap-only."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T15:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "drop redundant deliveries index"


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="webhooks", description=DESCRIPTION)

    async def run():
        await RawTable.raw("DROP INDEX IF EXISTS webhook_deliveries_event_idx")

    async def run_backwards():
        await RawTable.raw("CREATE INDEX IF NOT EXISTS webhook_deliveries_event_idx ON webhook_deliveries (event_id)")

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
