"""Drop three single-column indexes on events that no query needs: org_id is the prefix of
events_org_created_idx, and nothing looks events up by type or by creation time alone (the fan-out
backlog has its own partial index). Each index cost a write on every published event."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import ForeignKey, Timestamptz, Varchar
from piccolo.table import Table

ID = "2026-11-29T15:50:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "drop redundant events indexes"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="events", description=DESCRIPTION)
    for column, column_class in (("org", ForeignKey), ("event_type", Varchar), ("created_at", Timestamptz)):
        manager.alter_column(
            table_class_name="Event",
            tablename="events",
            column_name=column,
            db_column_name="org_id" if column == "org" else column,
            params={"index": False},
            old_params={"index": True},
            column_class=column_class,
            old_column_class=column_class,
            schema=None,
        )

    async def drop_foreign_key_index():  # Piccolo looks for it under the column's name, not org_id
        await RawTable.raw("DROP INDEX IF EXISTS events_org_id")

    async def restore_foreign_key_index():
        await RawTable.raw("CREATE INDEX IF NOT EXISTS events_org_id ON events (org_id)")

    manager.add_raw(drop_foreign_key_index)
    manager.add_raw_backwards(restore_foreign_key_index)
    return manager


class RawTable(Table):
    pass
