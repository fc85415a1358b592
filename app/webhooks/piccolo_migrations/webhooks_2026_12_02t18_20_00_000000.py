"""Delivery limits and dispatch (issue 13):

- a per-webhook concurrency cap (`webhooks.max_in_flight`, NULL: the organisation's
  `delivery_settings.max_in_flight`, 10 by default) and an optional rate limit
  (`webhooks.rate_limit_per_second`);
- `webhook_deliveries.message_id`: the Dramatiq message that carries the delivery to a worker. NULL means
  the delivery is held in PostgreSQL (not yet due, or its webhook is at its cap or rate limit) and the
  scheduler hands it to the queue when PostgreSQL's clock says it is due and a slot is free; the sweep
  re-enqueues a due delivery only when its recorded message is gone from Redis.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-02T18:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "delivery limits and dispatch"


class RawTable(Table):
    pass


FORWARDS = [
    "ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS max_in_flight integer NULL "
    "CONSTRAINT webhooks_max_in_flight_range CHECK (max_in_flight BETWEEN 1 AND 1000)",
    "ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS rate_limit_per_second double precision NULL "
    "CONSTRAINT webhooks_rate_limit_range CHECK (rate_limit_per_second > 0 AND rate_limit_per_second <= 10000)",
    "ALTER TABLE delivery_settings ADD COLUMN IF NOT EXISTS max_in_flight integer NOT NULL DEFAULT 10 "
    "CONSTRAINT delivery_settings_max_in_flight_range CHECK (max_in_flight BETWEEN 1 AND 1000)",
    "ALTER TABLE webhook_deliveries ADD COLUMN IF NOT EXISTS message_id uuid NULL",
    # What the dispatcher reads: held deliveries in due order.
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_held_idx ON webhook_deliveries (next_attempt_at) "
    "WHERE status IN ('pending', 'failed') AND message_id IS NULL",
    # The same, per webhook: what a freed slot hands on.
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_held_by_webhook_idx ON webhook_deliveries "
    "(webhook_id, next_attempt_at) WHERE status IN ('pending', 'failed') AND message_id IS NULL",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS webhook_deliveries_held_by_webhook_idx",
    "DROP INDEX IF EXISTS webhook_deliveries_held_idx",
    "ALTER TABLE webhook_deliveries DROP COLUMN IF EXISTS message_id",
    "ALTER TABLE delivery_settings DROP COLUMN IF EXISTS max_in_flight",
    "ALTER TABLE webhooks DROP COLUMN IF EXISTS rate_limit_per_second",
    "ALTER TABLE webhooks DROP COLUMN IF EXISTS max_in_flight",
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
