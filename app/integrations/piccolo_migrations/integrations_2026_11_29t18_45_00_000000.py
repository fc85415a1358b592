"""The audit trail keeps the providers' names, so a row still reads right after a provider is removed;
integration names are unique in an organisation, provider names in an integration."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T18:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "failover_events keep provider names"

FORWARDS = [
    "ALTER TABLE failover_events ADD COLUMN IF NOT EXISTS from_provider_name TEXT",
    "ALTER TABLE failover_events ADD COLUMN IF NOT EXISTS to_provider_name TEXT",
    "UPDATE failover_events e SET from_provider_name = p.name FROM integration_providers p "
    "WHERE p.id = e.from_provider_id AND e.from_provider_name IS NULL",
    "UPDATE failover_events e SET to_provider_name = p.name FROM integration_providers p "
    "WHERE p.id = e.to_provider_id AND e.to_provider_name IS NULL",
    # Names are unique from now on (case aside): earlier duplicates get their id's first 8 characters.
    "UPDATE integrations i SET name = left(i.name, 88) || ' (' || left(i.id::text, 8) || ')' FROM (SELECT id, row_number() "
    "OVER (PARTITION BY org_id, lower(name) ORDER BY created_at, id) AS n FROM integrations) d "
    "WHERE d.id = i.id AND d.n > 1",
    "UPDATE integration_providers p SET name = left(p.name, 88) || ' (' || left(p.id::text, 8) || ')' FROM (SELECT id, "
    "row_number() OVER (PARTITION BY integration_id, lower(name) ORDER BY created_at, id) AS n "
    "FROM integration_providers) d WHERE d.id = p.id AND d.n > 1",
    "CREATE UNIQUE INDEX IF NOT EXISTS integrations_org_name_key ON integrations (org_id, lower(name))",
    "CREATE UNIQUE INDEX IF NOT EXISTS integration_providers_name_key "
    "ON integration_providers (integration_id, lower(name))",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS integration_providers_name_key",
    "DROP INDEX IF EXISTS integrations_org_name_key",
    "ALTER TABLE failover_events DROP COLUMN IF EXISTS to_provider_name",
    "ALTER TABLE failover_events DROP COLUMN IF EXISTS from_provider_name",
]


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
