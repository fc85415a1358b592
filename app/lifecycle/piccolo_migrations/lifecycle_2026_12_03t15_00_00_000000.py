"""Retention and erasure (issue 15).

- `retention_settings`: an organisation's retention per kind of record, in days (NULL: the
  installation's default, `INTIME_RETENTION_*`).
- `prune_state`: per kind, when the pruner last ran and what it removed (the retention page shows it).
- `prune_marks`: per webhook, up to which delivery creation time the bodies of its attempts are
  already removed, so the body pass never reads a row twice.
- `dlq_notices`: per organisation, each announcement (`webhook.dlq.expiring`) of uncleared DLQ items
  that reach their retention soon: up to which dead-lettering time it covered, and when it went out.
  No item is removed less than a day after it was announced.
- `health_check_hours`: hourly summaries of health checks, kept longer than the checks themselves.
- `erasures`: the audit trail of payload erasures.
- `events.erased_at`, `delivery_attempts.body_removed` ('retention' | 'erasure'): what was removed
  and why, so the debugger can say so instead of showing an empty body.
- Autovacuum sooner on the three tables pruning churns (2% dead rows instead of PostgreSQL's 20%):
  the steady-state bench saw rows flat but bytes growing with the default.
- Indexes the pruner reads, each leading with the organisation (or webhook) it prunes for, and the
  DLQ index now skips cleared items (the DLQ page lists only uncleared ones).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-12-03T15:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "retention settings, prune state, erasure"


class RawTable(Table):
    pass


FORWARDS = [
    """CREATE TABLE IF NOT EXISTS retention_settings (
        org_id uuid PRIMARY KEY REFERENCES organizations(id) ON DELETE CASCADE,
        deliveries_days integer CHECK (deliveries_days >= 1),
        bodies_days integer CHECK (bodies_days >= 1),
        events_days integer CHECK (events_days >= 1),
        health_checks_days integer CHECK (health_checks_days >= 1),
        summaries_days integer CHECK (summaries_days >= 1),
        jobs_days integer CHECK (jobs_days >= 1),
        cleared_dlq_days integer CHECK (cleared_dlq_days >= 1),
        audit_days integer CHECK (audit_days >= 1),
        updated_at timestamptz NOT NULL DEFAULT now(),
        updated_by uuid REFERENCES users(id) ON DELETE SET NULL
    )""",
    """CREATE TABLE IF NOT EXISTS prune_state (
        kind varchar(32) PRIMARY KEY,
        last_run_at timestamptz,
        last_removed bigint NOT NULL DEFAULT 0,
        total_removed bigint NOT NULL DEFAULT 0,
        last_error text
    )""",
    """CREATE TABLE IF NOT EXISTS prune_marks (
        webhook_id uuid PRIMARY KEY REFERENCES webhooks(id) ON DELETE CASCADE,
        bodies_through timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS dlq_notices (
        org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        through timestamptz NOT NULL,
        announced_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (org_id, through)
    )""",
    """CREATE TABLE IF NOT EXISTS health_check_hours (
        provider_id uuid NOT NULL REFERENCES integration_providers(id) ON DELETE CASCADE,
        org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        hour timestamptz NOT NULL,
        checks integer NOT NULL,
        ok integer NOT NULL,
        latency_ms_sum bigint NOT NULL,
        latency_ms_max integer,
        PRIMARY KEY (provider_id, hour)
    )""",
    "CREATE INDEX IF NOT EXISTS health_check_hours_org_idx ON health_check_hours (org_id, hour)",
    """CREATE TABLE IF NOT EXISTS erasures (
        id uuid PRIMARY KEY,
        org_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
        actor text NOT NULL,
        event_id uuid,
        aggregate_id uuid,
        events integer NOT NULL,
        attempts integer NOT NULL,
        at timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS erasures_org_at_idx ON erasures (org_id, at)",
    "ALTER TABLE webhook_deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02)",
    "ALTER TABLE delivery_attempts SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02)",
    "ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02)",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS erased_at timestamptz",
    "ALTER TABLE delivery_attempts ADD COLUMN IF NOT EXISTS body_removed varchar(16)",
    "CREATE INDEX IF NOT EXISTS events_aggregate_idx ON events (org_id, aggregate_id) WHERE aggregate_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS health_checks_org_at_idx ON health_checks (org_id, at)",
    "CREATE INDEX IF NOT EXISTS jobs_org_created_idx ON jobs (org_id, created_at)",
    "DROP INDEX IF EXISTS jobs_org_id",
    "CREATE INDEX IF NOT EXISTS failover_events_org_at_idx ON failover_events (org_id, at)",
    "CREATE INDEX IF NOT EXISTS oauth_connection_events_org_at_idx ON oauth_connection_events (org_id, at)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_cleared_idx ON webhook_deliveries (org_id, cleared_at) "
    "WHERE status = 'dlq' AND cleared_at IS NOT NULL",
    "DROP INDEX IF EXISTS webhook_deliveries_dlq_idx",
    "CREATE INDEX webhook_deliveries_dlq_idx ON webhook_deliveries (org_id, dlq_at DESC, id DESC) "
    "WHERE status = 'dlq' AND cleared_at IS NULL",
]
BACKWARDS = [
    "DROP INDEX IF EXISTS webhook_deliveries_dlq_idx",
    "CREATE INDEX webhook_deliveries_dlq_idx ON webhook_deliveries (org_id, dlq_at DESC, id DESC) WHERE status = 'dlq'",
    "DROP INDEX IF EXISTS webhook_deliveries_cleared_idx",
    "DROP INDEX IF EXISTS oauth_connection_events_org_at_idx",
    "DROP INDEX IF EXISTS failover_events_org_at_idx",
    "CREATE INDEX IF NOT EXISTS jobs_org_id ON jobs (org_id)",
    "DROP INDEX IF EXISTS jobs_org_created_idx",
    "DROP INDEX IF EXISTS health_checks_org_at_idx",
    "DROP INDEX IF EXISTS events_aggregate_idx",
    "ALTER TABLE delivery_attempts DROP COLUMN IF EXISTS body_removed",
    "ALTER TABLE events DROP COLUMN IF EXISTS erased_at",
    "DROP TABLE IF EXISTS erasures",
    "DROP TABLE IF EXISTS health_check_hours",
    "DROP TABLE IF EXISTS dlq_notices",
    "DROP TABLE IF EXISTS prune_marks",
    "DROP TABLE IF EXISTS prune_state",
    "DROP TABLE IF EXISTS retention_settings",
    "ALTER TABLE webhook_deliveries RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)",
    "ALTER TABLE delivery_attempts RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)",
    "ALTER TABLE events RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="lifecycle", description=DESCRIPTION)

    async def run():
        for statement in FORWARDS:
            await RawTable.raw(statement)

    async def run_backwards():
        for statement in BACKWARDS:
            await RawTable.raw(statement)

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
