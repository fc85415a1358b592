"""The event outbox and the catalog of event types."""

from __future__ import annotations

from piccolo.columns import JSONB, UUID, Boolean, ForeignKey, OnDelete, Text, Timestamptz, Varchar
from piccolo.table import Table

from app.accounts.tables import Organization


class EventType(Table, tablename="event_types"):
    """One row per type in `catalog.toml`, synced by `intime catalog sync` (run by every migrate)."""

    name = Varchar(length=100, primary_key=True)
    domain = Varchar(length=50, index=True)
    category = Varchar(length=50)
    description = Text()
    example = JSONB(default="{}")
    deprecated = Boolean(default=False)


class Event(Table, tablename="events"):
    """Written only by the SQL function publish_event(), so an event commits with its cause."""

    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    event_type = Varchar(length=100)
    aggregate_id = UUID(null=True, default=None)
    payload = JSONB()
    metadata = JSONB(default="{}")
    user_id = UUID(null=True, default=None)
    created_at = Timestamptz()
    # Set when the scheduler has turned the event into deliveries; null rows are the fan-out backlog.
    fanned_out_at = Timestamptz(null=True, default=None)
