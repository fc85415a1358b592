"""Dispatch's sweep index (issue 13, finding 5):

- `webhook_deliveries_handed_idx`: deliveries handed to the queue and not yet claimed, by when they were
  handed over. The sweep asks Redis about exactly these (is the message still there?) instead of
  guessing from the queue's length; there are at most the webhooks' caps of them.
- `webhook_deliveries_due_idx` goes: due held deliveries are found through the held indexes, and
  nothing else reads waiting deliveries by due time; it was written on every transition.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-03T00:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "dispatch's sweep index"


class RawTable(Table):
    pass


FORWARDS = [
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_handed_idx ON webhook_deliveries (requeued_at) "
    "WHERE status IN ('pending', 'failed') AND message_id IS NOT NULL",
    "DROP INDEX IF EXISTS webhook_deliveries_due_idx",
]
BACKWARDS = [
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx "
    "ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'failed')",
    "DROP INDEX IF EXISTS webhook_deliveries_handed_idx",
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
