"""Dispatch's per-webhook index answers only the statements written for it (issue 14).

`webhook_deliveries_held_by_webhook_idx` had the same predicate as `webhook_deliveries_held_idx` (all
held deliveries by due time), so the planner was free to serve dispatch's per-webhook lookups from
either; after an ANALYZE of a backlog it chose the latter and filtered out every other webhook's rows.
Its predicate is now written `(...) IS TRUE`: PostgreSQL matches that form only in a query that states
it word for word (dispatch's DUE_WEBHOOKS and LOCK_HELD do), so neither index can stand in for the
other. The rows it holds are the same.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-03T14:45:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "dispatch's per-webhook index answers only dispatch"


class RawTable(Table):
    pass


FORWARDS = [
    "DROP INDEX IF EXISTS webhook_deliveries_held_by_webhook_idx",
    "CREATE INDEX webhook_deliveries_held_by_webhook_idx ON webhook_deliveries (webhook_id, next_attempt_at) "
    "WHERE (status IN ('pending', 'failed') AND message_id IS NULL) IS TRUE",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS webhook_deliveries_held_by_webhook_idx",
    "CREATE INDEX webhook_deliveries_held_by_webhook_idx ON webhook_deliveries (webhook_id, next_attempt_at) "
    "WHERE status IN ('pending', 'failed') AND message_id IS NULL",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="webhooks", description=DESCRIPTION)

    async def run():
        for statement in FORWARDS:
            await RawTable.raw(statement)

    async def run_backwards():
        for statement in BACKWARDS:
            await RawTable.raw(statement)

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
