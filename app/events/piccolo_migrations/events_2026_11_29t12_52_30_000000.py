"""publish_event(): the outbox function, and the index the event list pages read."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.table import Table

ID = "2026-11-29T12:52:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "publish_event function"

# No literal braces below: Table.raw() treats {} as a parameter placeholder.
SQL = r"""
-- The outbox. Host code calls this inside its own transaction, so an event exists exactly when the
-- change that caused it commits; pg_notify is transactional too, so listeners hear of committed events
-- only. Notifications carry ids, not payloads (NOTIFY payloads are capped at 8000 bytes).
CREATE OR REPLACE FUNCTION publish_event(
    p_event_type text,
    p_aggregate_id uuid,
    p_payload jsonb,
    p_user_id uuid DEFAULT NULL,
    p_metadata jsonb DEFAULT jsonb_build_object(),
    p_org_id uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_id uuid := gen_random_uuid();
    v_note text;
BEGIN
    IF p_org_id IS NULL THEN
        RAISE EXCEPTION 'publish_event: p_org_id is required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM event_types WHERE name = p_event_type) THEN
        RAISE EXCEPTION 'publish_event: unknown event type "%"', p_event_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'the catalog (GET /api/v1/event-types) lists the known types';
    END IF;
    IF p_payload IS NULL OR jsonb_typeof(p_payload) <> 'object' THEN
        RAISE EXCEPTION 'publish_event: payload must be a JSON object, not %',
            coalesce(jsonb_typeof(p_payload), 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_metadata IS NOT NULL AND jsonb_typeof(p_metadata) <> 'object' THEN
        RAISE EXCEPTION 'publish_event: metadata must be a JSON object, not %', jsonb_typeof(p_metadata)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO events (id, org_id, event_type, aggregate_id, payload, metadata, user_id, created_at)
    VALUES (v_id, p_org_id, p_event_type, p_aggregate_id, p_payload, coalesce(p_metadata, jsonb_build_object()),
            p_user_id, now());

    v_note := json_build_object('id', v_id, 'type', p_event_type, 'org_id', p_org_id)::text;
    PERFORM pg_notify(split_part(p_event_type, '.', 1), v_note);
    PERFORM pg_notify('events', v_note);
    RETURN v_id;
END
$fn$;
"""


class RawTable(Table):
    pass


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="events", description=DESCRIPTION)

    async def run():
        await RawTable.raw(SQL)
        await RawTable.raw(
            "CREATE INDEX IF NOT EXISTS events_org_created_idx ON events (org_id, created_at DESC, id DESC)"
        )

    async def run_backwards():
        await RawTable.raw("DROP INDEX IF EXISTS events_org_created_idx")
        await RawTable.raw("DROP FUNCTION IF EXISTS publish_event(text, uuid, jsonb, uuid, jsonb, uuid)")

    manager.add_raw(run)
    manager.add_raw_backwards(run_backwards)
    return manager
