"""Indexes the delivery engine and the pages read: one delivery per (event, webhook), keyset pages
of a webhook's history, the DLQ, the scheduler's sweeps, and the fan-out backlog."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T13:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "delivery indexes"

INDEXES = [
    "CREATE UNIQUE INDEX IF NOT EXISTS webhook_deliveries_event_webhook_uq "
    "ON webhook_deliveries (event_id, webhook_id)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_history_idx "
    "ON webhook_deliveries (webhook_id, created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_dlq_idx "
    "ON webhook_deliveries (org_id, dlq_at DESC, id DESC) WHERE status = 'dlq'",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due_idx "
    "ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'failed')",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_lease_idx "
    "ON webhook_deliveries (lease_expires_at) WHERE status = 'processing'",
    "CREATE INDEX IF NOT EXISTS delivery_attempts_delivery_idx ON delivery_attempts (delivery_id, attempt_number)",
    "CREATE INDEX IF NOT EXISTS webhooks_org_live_idx ON webhooks (org_id) WHERE deleted_at IS NULL",
    "CREATE INDEX IF NOT EXISTS events_backlog_idx ON events (created_at) WHERE fanned_out_at IS NULL",
]


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="webhooks", description=DESCRIPTION)

    async def run():
        for statement in INDEXES:
            await RawTable.raw(statement)
        # Events published before this migration have no webhooks to reach: not a backlog.
        await RawTable.raw("UPDATE events SET fanned_out_at = created_at WHERE fanned_out_at IS NULL")

    async def run_backwards():
        for statement in INDEXES:
            name = statement.split("EXISTS ")[1].split(" ")[0]
            await RawTable.raw(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
