"""Drop the index of waiting deliveries by webhook: the history index by status, (webhook_id, status,
created_at, id), answers the same two questions (how many wait for a disabled webhook, and which to
move to the DLQ next) from its leading columns, and every delivery paid two entries in the dropped
one (created, handed over): issue 14, fewer index writes per delivery."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-03T13:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "drop the waiting-by-webhook index the status history index covers"


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="webhooks", description=DESCRIPTION)

    async def run():
        await RawTable.raw("DROP INDEX IF EXISTS webhook_deliveries_waiting_idx")

    async def run_backwards():
        await RawTable.raw(
            "CREATE INDEX IF NOT EXISTS webhook_deliveries_waiting_idx ON webhook_deliveries (webhook_id) "
            "WHERE status IN ('pending', 'failed')"
        )

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
