"""One stats row per (webhook, hour), and the debugger's search by event id."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T13:55:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "stats and search indexes"

INDEXES = [
    "CREATE UNIQUE INDEX IF NOT EXISTS webhook_stats_hourly_uq ON webhook_stats_hourly (webhook_id, hour)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_event_idx ON webhook_deliveries (event_id)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_status_history_idx "
    "ON webhook_deliveries (webhook_id, status, created_at DESC, id DESC)",
]


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="webhooks", description=DESCRIPTION)

    async def run():
        for statement in INDEXES:
            await RawTable.raw(statement)

    async def run_backwards():
        for statement in INDEXES:
            await RawTable.raw(f"DROP INDEX IF EXISTS {statement.split('EXISTS ')[1].split(' ')[0]}")

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
