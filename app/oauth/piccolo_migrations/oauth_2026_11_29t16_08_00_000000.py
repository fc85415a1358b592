"""Uniqueness and the refresh sweep's index."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T16:08:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "oauth indexes"

INDEXES = [
    "CREATE UNIQUE INDEX IF NOT EXISTS oauth_clients_org_provider_uq ON oauth_clients (org_id, provider)",
    "CREATE UNIQUE INDEX IF NOT EXISTS oauth_connections_account_uq "
    "ON oauth_connections (org_id, provider, account_id)",
    "CREATE INDEX IF NOT EXISTS oauth_connections_refresh_idx ON oauth_connections (next_refresh_at) "
    "WHERE status IN ('active', 'error') AND refresh_token IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS oauth_connection_events_history_idx "
    "ON oauth_connection_events (connection_id, at DESC)",
]


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="oauth", description=DESCRIPTION)

    async def run():
        for statement in INDEXES:
            await RawTable.raw(statement)

    async def run_backwards():
        for statement in INDEXES:
            await RawTable.raw(f"DROP INDEX IF EXISTS {statement.split('EXISTS ')[1].split(' ')[0]}")

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
