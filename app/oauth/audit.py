"""A connection's audit trail: every connect, refresh, failure and disconnect leaves a row, written in
the same transaction as the change it records, so the trail never claims what did not happen. The
rows outlive the tokens (a disconnected connection keeps its history); read by `queries.history`."""

from __future__ import annotations

import uuid


async def record(conn, org_id: uuid.UUID, connection_id: uuid.UUID, kind: str, detail: str, actor: str) -> None:
    await conn.execute(
        "INSERT INTO oauth_connection_events (id, org_id, connection_id, kind, detail, actor, at) "
        "VALUES ($1, $2, $3, $4, $5, $6, now())",
        uuid.uuid4(),
        org_id,
        connection_id,
        kind,
        detail[:1000],
        actor[:200],
    )
