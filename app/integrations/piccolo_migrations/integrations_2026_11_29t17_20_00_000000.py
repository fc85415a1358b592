"""The health history strip, the audit trail and the provider order are read by these."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T17:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "integrations indexes"

INDEXES = [
    "CREATE INDEX IF NOT EXISTS health_checks_provider_at_idx ON health_checks (provider_id, at DESC)",
    "CREATE INDEX IF NOT EXISTS failover_events_integration_at_idx ON failover_events (integration_id, at DESC)",
    "CREATE INDEX IF NOT EXISTS integration_providers_order_idx ON integration_providers (integration_id, priority)",
    "CREATE INDEX IF NOT EXISTS integrations_org_idx ON integrations (org_id)",
]


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="integrations", description=DESCRIPTION)

    async def run():
        for statement in INDEXES:
            await RawTable.raw(statement)

    async def run_backwards():
        for statement in INDEXES:
            await RawTable.raw(f"DROP INDEX IF EXISTS {statement.split('EXISTS ')[1].split(' ')[0]}")

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
