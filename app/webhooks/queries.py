"""Reading deliveries and their attempts: keyset-paginated, filtered, always per organisation.

The DLQ's list: dlq.py; a bulk job's progress: bulk.py."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core import db
from app.core.fields import as_uuid
from app.core.paging import BadQuery, check_limit, decode_cursor, encode_cursor
from app.webhooks.payloads import build_body
from app.webhooks.tables import DeliveryStatus

DELIVERY_COLUMNS = (
    "d.id, d.webhook_id, d.event_id, d.event_type, d.status, d.attempt_count, d.next_attempt_at, "
    "d.last_status_code, d.last_error, d.dlq_reason, d.dlq_at, d.cleared_at, d.created_at, d.updated_at, "
    "d.completed_at, w.name AS webhook_name, w.url AS webhook_url"
)


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


async def keyset_page(
    sql_where: str, args: list[Any], order_column: str, limit: int, cursor: str | None, columns: str = DELIVERY_COLUMNS
) -> Page:
    """Newest first by `order_column`, then id: a keyset page, so rows arriving meanwhile never shift it."""
    if cursor:
        at, row_id = decode_cursor(cursor)
        args = [*args, at, row_id]
        sql_where += f" AND ({order_column}, d.id) < (${len(args) - 1}, ${len(args)})"
    sql = (
        f"SELECT {columns} FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id "  # noqa: S608
        f"WHERE {sql_where} ORDER BY {order_column} DESC, d.id DESC LIMIT {limit + 1}"
    )
    async with db.connection() as conn:
        rows = [dict(row) for row in await conn.fetch(sql, *args)]
    more = len(rows) > limit
    rows = rows[:limit]
    key = order_column.split(".")[1]
    return Page(rows, encode_cursor(rows[-1][key], rows[-1]["id"]) if more and rows else None)


async def list_deliveries(
    org_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    status: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    search: str | None = None,
) -> Page:
    """A webhook's deliveries, newest first. `search` is a delivery id or an event id."""
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise BadQuery("status", f"status is one of {', '.join(s.value for s in DeliveryStatus)}.")
    clauses: list[str] = ["d.org_id = $1", "d.webhook_id = $2"]
    args: list[Any] = [org_id, webhook_id]
    for clause, value in (
        ("d.status = ", status),
        ("d.event_type = ", event_type),
        ("d.created_at >= ", since),
        ("d.created_at < ", until),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{clause}${len(args)}")
    if search:
        key = as_uuid(search.strip())
        if key is None:
            raise BadQuery("search", "Search by a delivery id or an event id (a UUID).")
        args.append(key)
        clauses.append(f"(d.id = ${len(args)} OR d.event_id = ${len(args)})")
    return await keyset_page(" AND ".join(clauses), args, "d.created_at", check_limit(limit), cursor)


async def next_retry(webhook_id: uuid.UUID):
    async with db.connection() as conn:
        return await conn.fetchval(
            "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'failed'",
            webhook_id,
        )


async def get_delivery(org_id: uuid.UUID, delivery_id: uuid.UUID | str) -> dict[str, Any] | None:
    key = as_uuid(delivery_id)
    if key is None:
        return None
    async with db.connection() as conn:
        row = await conn.fetchrow(
            f"SELECT {DELIVERY_COLUMNS}, e.payload::text AS payload, e.metadata::text AS metadata, "  # noqa: S608
            "e.aggregate_id, e.created_at AS event_at, e.erased_at AS event_erased_at, d.org_id "
            "FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id "
            "WHERE d.id = $1 AND d.org_id = $2",
            key,
            org_id,
        )
        if row is None:
            return None
        attempts = await conn.fetch(
            "SELECT id, attempt_number, trigger, started_at, duration_ms, request_url, "
            "request_headers::text AS request_headers, response_status, response_headers::text AS response_headers, "
            "response_body, response_truncated, error_class, error_message, next_delay_ms, outcome, body_removed "
            "FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt_number, started_at",
            key,
        )
    delivery = dict(row)
    # The exact bytes every attempt sent (they are the same on each): what "Copy as curl" reproduces.
    # Once the payload is erased they cannot be rebuilt: an envelope around `{}` was never sent.
    delivery["request_body"] = "" if row["event_erased_at"] else build_body(row).decode()
    delivery["payload"] = json.loads(delivery["payload"])
    delivery["metadata"] = json.loads(delivery["metadata"])
    delivery["attempts"] = [
        {
            **dict(a),
            "request_headers": json.loads(a["request_headers"] or "{}"),
            "response_headers": json.loads(a["response_headers"]) if a["response_headers"] else None,
        }
        for a in attempts
    ]
    return delivery
