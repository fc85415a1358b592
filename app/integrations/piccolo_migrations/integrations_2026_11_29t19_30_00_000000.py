"""A provider that refused our credentials stays out of traffic until they change (health checks, which
carry no credentials, cannot tell)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T19:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "integration_providers.credentials_rejected_at"

FORWARDS = ["ALTER TABLE integration_providers ADD COLUMN IF NOT EXISTS credentials_rejected_at TIMESTAMPTZ"]
BACKWARDS = ["ALTER TABLE integration_providers DROP COLUMN IF EXISTS credentials_rejected_at"]


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="integrations", description=DESCRIPTION)

    async def run():
        for statement in FORWARDS:
            await RawTable.raw(statement)

    async def run_backwards():
        for statement in BACKWARDS:
            await RawTable.raw(statement)

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
