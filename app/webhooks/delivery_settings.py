"""An organisation's rules for its webhooks' deliveries beyond the retry policy: what counts towards
auto-disable (dlq.AUTO_DISABLE_AFTER failed deliveries in a row), and how many deliveries of one
webhook may be in flight at once; with each webhook's own cap and rate limit, the limits the engine
enforces (`limits_in`).

Why a payload refusal does not count by default: a 400, 409, 413 or 422 says "not this event" (a
schema the receiver does not know yet, a record it already has). Ten of them for one event type would
otherwise disable the endpoint for every other event it handles well. Refusals that say the endpoint
itself is wrong (401, 403: its credentials; 404, 405: its address) always count, and 410 Gone disables
at once. An organisation whose receivers answer 4xx only when they are broken can count them all.

Why a cap on deliveries in flight: a burst of 100k events must not open 100k connections to one
receiver (nor fill every worker with one slow endpoint's deliveries). Deliveries over the cap wait in
PostgreSQL, not in the queue, and waiting there uses none of their retries.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from app.core import db, fields
from app.webhooks import statements

# Answers that say the endpoint is misconfigured, whatever the event: they always count.
ENDPOINT_REFUSALS = frozenset({401, 403, 404, 405})
# The bounds the database's CHECK constraints hold too (migration 2026-12-02T18:20).
DEFAULT_MAX_IN_FLIGHT = 10
MAX_IN_FLIGHT_RANGE = (1, 1000)
MAX_RATE_PER_SECOND = 10_000
RULE_FIELDS = {"count_payload_rejections", "max_in_flight"}
CAP_MESSAGE = "A whole number of deliveries from 1 to 1,000."
RATE_MESSAGE = "A number of deliveries per second above 0 and at most 10,000, e.g. 0.5 for one every 2 seconds."
DECIMAL_RE = re.compile(r"[0-9]{1,5}(\.[0-9]{0,20})?|\.[0-9]{1,20}")


class DeliveryRules(msgspec.Struct):
    count_payload_rejections: bool = False
    """Whether a refusal of one payload (a non-retryable 4xx other than 401, 403, 404, 405, 410)
    counts towards auto-disable."""
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    """Deliveries of one webhook queued or being sent at once, for webhooks without a cap of their
    own; more wait in PostgreSQL without using a retry."""


class RulesInvalid(fields.Invalid):
    """Delivery rules that cannot be saved."""


class WebhookLimits(NamedTuple):
    max_in_flight: int
    """The webhook's own cap, else its organisation's default."""
    rate_limit_per_second: float | None
    """Deliveries started per second at most; None: no limit."""


async def rules(org_id: uuid.UUID) -> DeliveryRules:
    async with db.connection() as conn:
        return await rules_in(conn, org_id)


async def rules_in(conn, org_id: uuid.UUID) -> DeliveryRules:
    row = await conn.fetchrow(statements.DELIVERY_RULES, org_id)
    return DeliveryRules(**dict(row)) if row else DeliveryRules()


async def set_rules(org_id: uuid.UUID, new: DeliveryRules) -> DeliveryRules:
    async with db.connection() as conn:
        await conn.execute(statements.SET_DELIVERY_RULES, org_id, new.count_payload_rejections, new.max_in_flight)
    return new


async def limits_in(conn, webhook_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, WebhookLimits]:
    """Each webhook's effective (cap, rate) in one query; ids of no webhook are left out."""
    ids = list(webhook_ids)
    if not ids:
        return {}
    rows = await conn.fetch(statements.WEBHOOK_LIMITS, ids, DEFAULT_MAX_IN_FLIGHT)
    return {row["id"]: WebhookLimits(row["max_in_flight"], row["rate_limit_per_second"]) for row in rows}


async def limits(webhook_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, WebhookLimits]:
    async with db.connection() as conn:
        return await limits_in(conn, webhook_ids)


def shown_rate(rate: float) -> str:
    """A rate as people write it and as the form takes it back: 5, 0.5, 0.25 (never 5.0 or 1e-05)."""
    return f"{rate:.9f}".rstrip("0").rstrip(".")


def counts_towards_disable(status: int | None, org_rules: DeliveryRules) -> bool:
    """Whether a non-retryable answer `status` counts as a failed delivery for auto-disable."""
    return status in ENDPOINT_REFUSALS or org_rules.count_payload_rejections


# --- checking input (the API's bodies and the pages' forms) -----------------------------------------


def check_cap(value: Any, field: str, errors: dict[str, str]) -> int | None:
    """A cap on deliveries in flight: a whole number in MAX_IN_FLIGHT_RANGE (a form's digits count)."""
    low, high = MAX_IN_FLIGHT_RANGE
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[field] = CAP_MESSAGE
        return None
    return value


def check_rate(value: Any, field: str, errors: dict[str, str]) -> float | None:
    """A rate limit in deliveries per second: above 0, at most MAX_RATE_PER_SECOND, decimals allowed."""
    if isinstance(value, str) and DECIMAL_RE.fullmatch(value.strip()):
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors[field] = RATE_MESSAGE
        return None
    if not 0 < value <= MAX_RATE_PER_SECOND:
        errors[field] = RATE_MESSAGE
        return None
    return float(value)


def parse_rules(data: dict[str, Any], current: DeliveryRules) -> DeliveryRules:
    """The rules after a change: a field given replaces the current value, a field left out keeps it."""
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if "count_payload_rejections" in data:
        changes["count_payload_rejections"] = fields.boolean(data, "count_payload_rejections", errors)
    if "max_in_flight" in data:
        changes["max_in_flight"] = check_cap(data["max_in_flight"], "max_in_flight", errors)
    fields.unknown(data, RULE_FIELDS, errors)
    if errors:
        raise RulesInvalid(errors)
    return msgspec.structs.replace(current, **changes)
