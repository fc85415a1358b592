"""Background integration calls are rows (issue 13, finding 9): `integration_calls` holds every call
from enqueue to outcome, so that a Redis wipe loses none; the scheduler's sweep re-sends a waiting call
whose message is gone and takes over one whose worker died (its lease ran out)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-03T10:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "integration_calls"

FORWARDS = [
    """CREATE TABLE IF NOT EXISTS integration_calls (
        id uuid PRIMARY KEY,
        call_id varchar(255) NOT NULL,
        org_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE ON UPDATE CASCADE,
        integration_id uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE ON UPDATE CASCADE,
        operation varchar(100) NOT NULL,
        payload jsonb NOT NULL,
        status varchar(16) NOT NULL DEFAULT 'queued' CONSTRAINT integration_calls_status_check
            CHECK (status IN ('queued', 'running', 'failed', 'deferred', 'succeeded', 'rejected', 'abandoned')),
        attempts integer NOT NULL DEFAULT 0,
        failures integer NOT NULL DEFAULT 0,
        deferrals integer NOT NULL DEFAULT 0,
        reserved_for uuid NULL,
        next_attempt_at timestamptz NULL,
        lease_expires_at timestamptz NULL,
        requeued_at timestamptz NULL,
        last_error text NULL,
        provider_name text NULL,
        status_code integer NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz NULL
    )""",
    # The caller's call id is the Idempotency-Key: enqueueing it twice for one integration is one call.
    "CREATE UNIQUE INDEX IF NOT EXISTS integration_calls_call_id_key ON integration_calls (integration_id, call_id)",
    # The sweep's two reads: waiting calls in due order, running ones by lease.
    "CREATE INDEX IF NOT EXISTS integration_calls_waiting_idx ON integration_calls (next_attempt_at) "
    "WHERE status IN ('queued', 'failed', 'deferred')",
    "CREATE INDEX IF NOT EXISTS integration_calls_leased_idx ON integration_calls (lease_expires_at) "
    "WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS integration_calls_org_idx ON integration_calls (org_id, created_at DESC)",
]
BACKWARDS = ["DROP TABLE IF EXISTS integration_calls"]


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
