"""Fan-out: each new event becomes one delivery per matching enabled webhook of its organisation."""

from __future__ import annotations

import uuid

from app.core import db
from app.webhooks import statements
from app.webhooks.patterns import matches_any


async def fan_out_backlog(limit: int = 500) -> tuple[int, list[uuid.UUID]]:
    """Turn events not yet fanned out into deliveries, in one transaction, idempotently.

    Rows are taken with SKIP LOCKED, so several schedulers share the backlog without waiting on each
    other; the unique (event, webhook) index makes a repeat harmless. Returns how many events it took
    and the new delivery ids.
    """
    async with db.connection() as conn, conn.transaction():
        events = await conn.fetch(
            "SELECT e.id, e.org_id, e.event_type, t.domain FROM events e "
            "LEFT JOIN event_types t ON t.name = e.event_type "
            "WHERE e.fanned_out_at IS NULL ORDER BY e.created_at LIMIT $1 FOR UPDATE OF e SKIP LOCKED",
            limit,
        )
        if not events:
            return 0, []
        org_ids = list({row["org_id"] for row in events})
        hooks = await conn.fetch(
            "SELECT id, org_id, event_patterns FROM webhooks WHERE org_id = ANY($1) AND enabled AND deleted_at IS NULL",
            org_ids,
        )
        by_org: dict[uuid.UUID, list] = {}
        for hook in hooks:
            by_org.setdefault(hook["org_id"], []).append(hook)
        ids, webhook_ids, event_ids, org_col, types = [], [], [], [], []
        for event in events:
            for hook in by_org.get(event["org_id"], ()):
                if matches_any(hook["event_patterns"], event["event_type"], event["domain"]):
                    ids.append(uuid.uuid4())
                    webhook_ids.append(hook["id"])
                    event_ids.append(event["id"])
                    org_col.append(event["org_id"])
                    types.append(event["event_type"])
        created = []
        if ids:
            created = await conn.fetch(
                statements.FAN_OUT_DELIVERIES,
                ids,
                org_col,
                webhook_ids,
                event_ids,
                types,
            )
        await conn.execute("UPDATE events SET fanned_out_at = now() WHERE id = ANY($1)", [row["id"] for row in events])
    return len(events), [row["id"] for row in created]
