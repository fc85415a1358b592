"""The refresh sweep's index covers the `refreshing` state too (a refresh whose worker died)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T17:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "refresh index covers refreshing"


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="oauth", description=DESCRIPTION)

    async def run():
        await RawTable.raw("DROP INDEX IF EXISTS oauth_connections_refresh_idx")
        await RawTable.raw(
            "CREATE INDEX oauth_connections_refresh_idx ON oauth_connections (next_refresh_at) "
            "WHERE status IN ('active', 'error', 'refreshing') AND refresh_token IS NOT NULL"
        )

    manager.add_raw(run)
    return manager
