"""An organisation's rules for its webhooks' deliveries beyond the retry policy: today, what counts
towards auto-disable (dlq.AUTO_DISABLE_AFTER failed deliveries in a row).

Why a payload refusal does not count by default: a 400, 409, 413 or 422 says "not this event" (a
schema the receiver does not know yet, a record it already has). Ten of them for one event type would
otherwise disable the endpoint for every other event it handles well. Refusals that say the endpoint
itself is wrong (401, 403: its credentials; 404, 405: its address) always count, and 410 Gone disables
at once. An organisation whose receivers answer 4xx only when they are broken can count them all.
"""

from __future__ import annotations

import uuid

import msgspec

from app.core import db
from app.webhooks import statements

# Answers that say the endpoint is misconfigured, whatever the event: they always count.
ENDPOINT_REFUSALS = frozenset({401, 403, 404, 405})


class DeliveryRules(msgspec.Struct):
    count_payload_rejections: bool = False
    """Whether a refusal of one payload (a non-retryable 4xx other than 401, 403, 404, 405, 410)
    counts towards auto-disable."""


async def rules(org_id: uuid.UUID) -> DeliveryRules:
    async with db.connection() as conn:
        return await rules_in(conn, org_id)


async def rules_in(conn, org_id: uuid.UUID) -> DeliveryRules:
    row = await conn.fetchrow(statements.DELIVERY_RULES, org_id)
    return DeliveryRules(**dict(row)) if row else DeliveryRules()


async def set_rules(org_id: uuid.UUID, new: DeliveryRules) -> DeliveryRules:
    async with db.connection() as conn:
        await conn.execute(statements.SET_DELIVERY_RULES, org_id, new.count_payload_rejections)
    return new


def counts_towards_disable(status: int | None, org_rules: DeliveryRules) -> bool:
    """Whether a non-retryable answer `status` counts as a failed delivery for auto-disable."""
    return status in ENDPOINT_REFUSALS or org_rules.count_payload_rejections
