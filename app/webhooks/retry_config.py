"""The retry policy in force: the organisation's stored default, and a webhook's own override of it.

The policy maths lives in retry.py, which reads nothing; this module is what reads and writes it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from app.core import db
from app.webhooks import retry, statements


async def org_policy(org_id: uuid.UUID) -> retry.Policy:
    async with db.connection() as conn:
        return await org_policy_in(conn, org_id)


async def org_policy_in(conn, org_id: uuid.UUID) -> retry.Policy:
    """The organisation's default, read on `conn` (the retry decision reads it inside its transaction)."""
    found = await conn.fetchrow(statements.ORG_POLICY, org_id)
    return retry.Policy(**dict(found)) if found else retry.DEFAULT_POLICY


async def set_org_policy(org_id: uuid.UUID, data: Any) -> retry.Policy:
    policy = retry.parse_policy(data)
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO retry_policies "
            "(org_id, strategy, base_delay_ms, max_delay_ms, max_retries, jitter, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, now()) "
            "ON CONFLICT (org_id) DO UPDATE SET strategy = excluded.strategy, "
            "base_delay_ms = excluded.base_delay_ms, max_delay_ms = excluded.max_delay_ms, "
            "max_retries = excluded.max_retries, jitter = excluded.jitter, updated_at = now()",
            org_id,
            policy.strategy,
            policy.base_delay_ms,
            policy.max_delay_ms,
            policy.max_retries,
            policy.jitter,
        )
    return policy


def effective_policy(webhook_override: Any, org_default: retry.Policy) -> retry.Policy:
    if webhook_override in (None, "null"):
        return org_default
    data = json.loads(webhook_override) if isinstance(webhook_override, str) else webhook_override
    return retry.parse_policy(data)
