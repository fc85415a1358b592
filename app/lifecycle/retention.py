"""Retention: how long each kind of record is kept, per organisation, within the installation's caps.

An organisation chooses whole days per kind, or nothing (the installation's default,
`INTIME_RETENTION_<KIND>`); no choice may exceed the cap (`INTIME_RETENTION_<KIND>_MAX`). The pruner
(app.lifecycle.prune) removes what is older; the retention page shows and edits the choices.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.core import db
from app.core.settings import DAY, get_settings


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    what: str
    tables: tuple[str, ...]  # what it holds now is counted in these (the first: rows shown)


KINDS: tuple[Kind, ...] = (
    Kind(
        "deliveries",
        "Deliveries and their attempts",
        "Finished deliveries (succeeded, or dead-lettered and past the DLQ notice) with every attempt.",
        ("webhook_deliveries", "delivery_attempts"),
    ),
    Kind(
        "bodies",
        "Response bodies",
        "After this, an attempt keeps its status, headers and timings; the body the receiver answered goes.",
        ("delivery_attempts",),
    ),
    Kind(
        "events",
        "Events",
        "Events and their payloads; never removed while a delivery of theirs is kept.",
        ("events",),
    ),
    Kind(
        "health_checks",
        "Health checks",
        "One row per provider check; hourly summaries outlive them.",
        ("health_checks",),
    ),
    Kind("summaries", "Hourly summaries", "Health-check and delivery statistics per hour.", ("health_check_hours",)),
    Kind("jobs", "Bulk jobs", "Finished DLQ retry and clear jobs with their progress.", ("jobs",)),
    Kind(
        "cleared_dlq",
        "Cleared DLQ items",
        "Dead-lettered deliveries an admin cleared, kept for audit.",
        ("webhook_deliveries",),
    ),
    Kind(
        "audit",
        "Audit trails",
        "Failover switches, OAuth connection history and payload erasures.",
        ("failover_events", "oauth_connection_events", "erasures"),
    ),
)
NAMES = tuple(kind.name for kind in KINDS)
COLUMNS = ", ".join(f"{name}_days" for name in NAMES)


class RetentionInvalid(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def describe(seconds: int) -> str:
    """A duration as people say it: `30 days`, `12 hours`, `2 minutes`."""
    for size, unit in ((DAY, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0 or size == 1:
            count = seconds // size
            if count:
                return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"


@dataclass(frozen=True)
class Retention:
    """An organisation's retention: what it chose (days, None: the default) and what applies (seconds)."""

    chosen: dict[str, int | None]
    defaults: dict[str, int]
    caps: dict[str, int]

    def seconds(self, kind: str) -> int:
        days = self.chosen.get(kind)
        return min(days * DAY, self.caps[kind]) if days is not None else self.defaults[kind]

    def max_days(self, kind: str) -> int:
        return self.caps[kind] // DAY


def default_retention() -> Retention:
    """The installation's defaults and caps, for an organisation that chose nothing."""
    settings = get_settings().retention
    return Retention(chosen=dict.fromkeys(NAMES), defaults=dict(settings.defaults), caps=dict(settings.caps))


async def for_org(org_id: uuid.UUID) -> Retention:
    async with db.connection() as conn:
        row = await conn.fetchrow(f"SELECT {COLUMNS} FROM retention_settings WHERE org_id = $1", org_id)  # noqa: S608
    base = default_retention()
    if row is None:
        return base
    return Retention(chosen={name: row[f"{name}_days"] for name in NAMES}, defaults=base.defaults, caps=base.caps)


def parse(form: Mapping[str, str]) -> dict[str, int | None]:
    """Whole days per kind from a form or JSON body (blank or null: the installation's default)."""
    base = default_retention()
    errors: dict[str, str] = {}
    chosen: dict[str, int | None] = {}
    for name in NAMES:
        raw = form.get(name)
        text = "" if raw is None else str(raw).strip()
        if text == "":
            chosen[name] = None
            continue
        top = base.max_days(name)
        if not (text.isascii() and text.isdigit()) or len(text) > 6 or not 1 <= int(text) <= top:
            if top < 1:
                errors[name] = f"This installation keeps these {describe(base.caps[name])} at most; leave it blank."
            else:
                errors[name] = f"Enter whole days from 1 to {top} (this installation's cap), or leave it blank."
            continue
        chosen[name] = int(text)
    if errors:
        raise RetentionInvalid(errors)
    return chosen


async def set_for_org(org_id: uuid.UUID, form: Mapping[str, str], user_id: uuid.UUID | None) -> Retention:
    chosen = parse(form)
    values = [chosen[name] for name in NAMES]
    placeholders = ", ".join(f"${i + 3}" for i in range(len(NAMES)))
    updates = ", ".join(f"{name}_days = excluded.{name}_days" for name in NAMES)
    async with db.connection() as conn:
        await conn.execute(
            f"INSERT INTO retention_settings (org_id, updated_by, {COLUMNS}, updated_at) "  # noqa: S608
            f"VALUES ($1, $2, {placeholders}, now()) ON CONFLICT (org_id) DO UPDATE SET {updates}, "
            "updated_by = excluded.updated_by, updated_at = now()",
            org_id,
            user_id,
            *values,
        )
    return await for_org(org_id)


async def all_chosen() -> dict[uuid.UUID, dict[str, int | None]]:
    """Every organisation's choices that differ from the defaults (the pruner's view)."""
    async with db.connection() as conn:
        rows = await conn.fetch(f"SELECT org_id, {COLUMNS} FROM retention_settings")  # noqa: S608
    return {row["org_id"]: {name: row[f"{name}_days"] for name in NAMES} for row in rows}


async def holdings(org_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """Per kind, about how many rows the organisation holds and their bytes: the planner's estimate of
    its rows (an exact count would read the whole table) times the table's average row size."""
    sizes: dict[str, tuple[float, int]] = {}
    async with db.connection() as conn:
        for row in await conn.fetch(
            "SELECT c.relname, c.reltuples, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
            "WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'",
            sorted({table for kind in KINDS for table in kind.tables}),
        ):
            sizes[row["relname"]] = (max(float(row["reltuples"]), 0.0), int(row["bytes"]))
        counts = {}
        for kind in KINDS:
            rows = bytes_ = 0
            for table in kind.tables:
                estimate = await _estimate(conn, kind.name, table, org_id)
                tuples, total = sizes.get(table, (0.0, 0))
                rows += estimate if table == kind.tables[0] or kind.name == "audit" else 0
                bytes_ += int(estimate * (total / tuples)) if tuples else 0
            counts[kind.name] = {"rows": rows, "bytes": bytes_}
    return counts


_ORG_FILTER = {
    "delivery_attempts": "delivery_id IN (SELECT id FROM webhook_deliveries WHERE org_id = $1)",
    "webhook_deliveries": "org_id = $1",
}


async def _estimate(conn, kind: str, table: str, org_id: uuid.UUID) -> int:
    where = _ORG_FILTER.get(table, "org_id = $1")
    if kind == "cleared_dlq":
        where += " AND status = 'dlq' AND cleared_at IS NOT NULL"
    elif kind == "bodies":
        where += " AND response_body IS NOT NULL"
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE {where}", org_id)  # noqa: S608
    return int(json.loads(plan)[0]["Plan"]["Plan Rows"]) if plan else 0


# --- what the retention and DLQ pages show ----------------------------------------------------------


async def prune_status() -> dict[str, dict]:
    """Per kind, when the pruner last ran and what it removed (installation-wide: one pass prunes every
    organisation). A kind missing here has not been pruned yet."""
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT kind, last_run_at, last_removed, total_removed, last_error FROM prune_state")
    return {row["kind"]: dict(row) for row in rows}


DLQ_EXPIRING = """
SELECT count(*) AS n, min(dlq_at) AS first FROM webhook_deliveries
WHERE org_id = $1 AND status = 'dlq' AND cleared_at IS NULL AND dlq_at < now() - make_interval(secs => $2::float8)
"""


async def dlq_expiring(
    org_id: uuid.UUID, within_seconds: int = DAY, keep: Retention | None = None
) -> tuple[int, datetime | None]:
    """How many uncleared DLQ items reach their retention (`deliveries`, counted from when they were
    dead-lettered) within `within_seconds`, and when the first of them does (it may be past already).

    An uncleared item is something nobody has looked at yet, so the DLQ page says so a day ahead, as
    `webhook.dlq.expiring` does. The count reads the DLQ index (org_id, dlq_at) of uncleared items."""
    seconds = (keep or await for_org(org_id)).seconds("deliveries")
    async with db.connection() as conn:
        row = await conn.fetchrow(DLQ_EXPIRING, org_id, float(seconds - within_seconds))
    first = row["first"] + timedelta(seconds=seconds) if row["first"] is not None else None
    return int(row["n"]), first
