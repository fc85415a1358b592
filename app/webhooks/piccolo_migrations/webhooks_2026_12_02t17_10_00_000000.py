"""Index what waits for each webhook: counting it when a webhook is disabled, and moving it to the DLQ
in batches afterwards, read only those rows instead of the webhook's whole history."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T17:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index waiting deliveries by webhook"


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="webhooks", description=DESCRIPTION)

    async def run():
        await RawTable.raw(
            "CREATE INDEX IF NOT EXISTS webhook_deliveries_waiting_idx ON webhook_deliveries (webhook_id) "
            "WHERE status IN ('pending', 'failed')"
        )

    async def run_backwards():
        await RawTable.raw("DROP INDEX IF EXISTS webhook_deliveries_waiting_idx")

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
