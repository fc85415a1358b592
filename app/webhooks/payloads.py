"""The bytes a webhook request carries (CONTRACT "A webhook request"): built in one place that the engine
(which sends them) and the read side (which shows them for "Copy as curl") both import, so they agree
to the byte and reading a delivery never pulls in the engine."""

from __future__ import annotations

import json
from datetime import UTC


def build_body(row) -> bytes:
    """The request body (CONTRACT). Payload and metadata are spliced in as PostgreSQL rendered them,
    so the bytes are the same on every attempt and no JSON is parsed on the hot path."""
    head = {
        "id": str(row["event_id"]),
        "type": row["event_type"],
        "timestamp": row["event_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "org_id": str(row["org_id"]),
        "aggregate_id": str(row["aggregate_id"]) if row["aggregate_id"] else None,
    }
    prefix = json.dumps(head, separators=(",", ":"))[:-1]
    return f'{prefix},"data":{row["payload"]},"metadata":{row["metadata"]}}}'.encode()
