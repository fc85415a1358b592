"""The shapes of the webhooks JSON API (CONTRACT "JSON API"): what /schema documents and a generated
client builds its models from.

Request bodies are typed for the document but decoded loosely (`Any`): `validation.validate` and
`retry.parse_policy` check every field and name each bad or unknown one with its own message, all at
once, which a strict decode (first error only, in msgspec's words) would replace. Responses are typed
exactly.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec


def _loose(json_schema: dict[str, Any], description: str) -> msgspec.Meta:
    """A field documented as `json_schema` but taken as any JSON, for the service to judge."""
    return msgspec.Meta(description=description, extra_json_schema={"extra": json_schema})


STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
POLICY_OR_NULL = {"oneOf": [{"$ref": "#/components/schemas/RetryPolicy"}, {"type": "null"}]}
HEADERS = {"type": "object", "additionalProperties": STRING}
CAP = {"type": "integer", "minimum": 1, "maximum": 1000}
CAP_OR_NULL = {"oneOf": [CAP, {"type": "null"}]}
RATE_OR_NULL = {"oneOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 10000}, {"type": "null"}]}

# --- retry policy (CONTRACT "Retry policy") -------------------------------------------------------------


class RetryPolicy(msgspec.Struct):
    strategy: str
    """exponential, linear or fixed."""
    base_delay_ms: int
    max_delay_ms: int
    max_retries: int
    jitter: bool
    """Multiply each delay by a factor from 0.5 to 1.0."""


class RetryPolicyIn(msgspec.Struct):
    """A retry policy to save; a field left out takes the default policy's value."""

    strategy: Annotated[Any, _loose({"enum": ["exponential", "linear", "fixed"]}, "How delays grow.")] = msgspec.UNSET
    base_delay_ms: Annotated[Any, _loose({"type": "integer"}, "The first delay, at most 7 days.")] = msgspec.UNSET
    max_delay_ms: Annotated[Any, _loose({"type": "integer"}, "The cap, at least the base delay.")] = msgspec.UNSET
    max_retries: Annotated[Any, _loose({"type": "integer"}, "0 to 50.")] = msgspec.UNSET
    jitter: Annotated[Any, _loose({"type": "boolean"}, "Spread retries of endpoints that failed together.")] = (
        msgspec.UNSET
    )


# --- webhooks ------------------------------------------------------------------------------------------


class WebhookIn(msgspec.Struct):
    """A webhook to create: name, url and event_patterns are required."""

    name: Annotated[Any, _loose(STRING, "1-100 characters.")] = msgspec.UNSET
    url: Annotated[Any, _loose(STRING, "http(s) URL; private and internal addresses are refused.")] = msgspec.UNSET
    event_patterns: Annotated[Any, _loose(STRINGS, "Event types or patterns: job.created, job.*, *.")] = msgspec.UNSET
    description: Annotated[Any, _loose(STRING, "At most 2000 characters.")] = msgspec.UNSET
    enabled: Annotated[Any, _loose({"type": "boolean"}, "Disabled webhooks receive nothing.")] = msgspec.UNSET
    timeout_seconds: Annotated[Any, _loose({"type": "integer"}, "1 to 60 seconds per attempt.")] = msgspec.UNSET
    retry_policy: Annotated[Any, _loose(POLICY_OR_NULL, "Overrides the organisation's; null: use it.")] = msgspec.UNSET
    headers: Annotated[Any, _loose(HEADERS, "Custom request headers (at most 20); values are stored sealed.")] = (
        msgspec.UNSET
    )
    max_in_flight: Annotated[
        Any,
        _loose(
            CAP_OR_NULL,
            "Deliveries of this webhook queued or being sent at once, across all workers; more wait in "
            "PostgreSQL without using a retry. null: the organisation's default (GET /delivery-settings).",
        ),
    ] = msgspec.UNSET
    rate_limit_per_second: Annotated[
        Any, _loose(RATE_OR_NULL, "Deliveries started per second at most, decimals allowed (0.5); null: no limit.")
    ] = msgspec.UNSET


WEBHOOK_REQUIRED = ["event_patterns", "name", "url"]
"""Required to create one: the create route's document says so, the service refuses their absence."""


class WebhookPatch(WebhookIn):
    """A change to a webhook: only the fields given change, and null is a value (a retry_policy of
    null returns the webhook to the organisation's default)."""


class WebhookOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    url: str
    description: str | None
    event_patterns: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    timeout_seconds: int
    headers: dict[str, str]
    """Custom headers, credentials masked."""
    retry_policy: RetryPolicy | None
    """None: the organisation's default applies."""
    max_in_flight: int | None
    """Deliveries of this webhook in flight at once; None: the organisation's default applies."""
    rate_limit_per_second: float | None
    """Deliveries started per second at most; None: no rate limit."""
    consecutive_failures: int
    secret_rotating_until: datetime | None
    """Until then the previous secret signs too."""
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    secret: str
    """The signing secret, shown only in this answer."""


class WebhookPage(msgspec.Struct):
    items: list[WebhookOut]
    next_cursor: str | None


class TestSent(msgspec.Struct):
    delivery_id: uuid.UUID


class SecretRotated(msgspec.Struct):
    secret: str
    previous_valid_until: datetime
    hint: str
    """The new secret masked, as pages show it."""


class HourStats(msgspec.Struct):
    hour: datetime
    successes: int
    failures: int
    p50_ms: int | None
    p95_ms: int | None


class WebhookStats(msgspec.Struct):
    window: str
    deliveries: int
    attempts: int
    successes: int
    failures: int
    success_rate: float | None
    p50_ms: int | None
    p95_ms: int | None
    hourly: list[HourStats]


# --- deliveries ----------------------------------------------------------------------------------------


class DeliveryOut(msgspec.Struct):
    id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    dlq_reason: str | None
    """Why it is in the DLQ: retries_exhausted, non_retryable, gone, webhook_disabled, webhook_deleted or
    payload_erased (its event's payload was erased before it was sent)."""
    dlq_at: datetime | None
    cleared_at: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    webhook_name: str
    """The webhook's name and URL, so a list reads without a lookup."""
    webhook_url: str


class DeliveryPage(msgspec.Struct):
    items: list[DeliveryOut]
    next_cursor: str | None


class AttemptOut(msgspec.Struct):
    id: uuid.UUID
    attempt_number: int
    trigger: str
    started_at: datetime
    duration_ms: int | None
    request_url: str
    request_headers: dict[str, str]
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    response_truncated: bool
    error_class: str | None
    error_message: str | None
    next_delay_ms: int | None
    outcome: str
    body_removed: str | None
    """Why `response_body` is empty although there was an answer: erasure (the event's payload was
    erased on request) or retention (kept only for the retention period); None: nothing removed."""


class DeliveryDetail(DeliveryOut):
    payload: dict[str, Any]
    """Empty once the event's payload was erased (`event_erased_at`)."""
    metadata: dict[str, Any]
    aggregate_id: uuid.UUID | None
    event_at: datetime
    org_id: uuid.UUID
    request_body: str
    """The exact bytes every attempt sent (the same on each); empty once the payload was erased."""
    attempts: list[AttemptOut]
    event_erased_at: datetime | None
    """When the event's payload (and every attempt's response body) was erased; None: it was not."""


class Replayed(msgspec.Struct):
    delivery_id: uuid.UUID
    status: str
    """pending: it is queued to be sent again."""


# --- the DLQ's bulk jobs -------------------------------------------------------------------------------


class DlqFilterIn(msgspec.Struct):
    """A bulk job's selection; no field means every item in the DLQ. Decoded loosely, like the webhook
    bodies: `dlq.parse_filter` names each bad or unknown field with its own message."""

    webhook_id: Annotated[Any, _loose(STRING, "The webhook's id (a UUID).")] = None
    event_type: Annotated[Any, _loose(STRING, "An event type, e.g. job.created.")] = None
    reason: Annotated[
        Any,
        _loose(STRING, "retries_exhausted, non_retryable, gone, webhook_disabled, webhook_deleted or payload_erased."),
    ] = None
    since: Annotated[Any, _loose(STRING, "ISO 8601; without a zone it is UTC. Dead-lettered at or after.")] = None
    until: Annotated[Any, _loose(STRING, "ISO 8601; dead-lettered before this time.")] = None


# --- the organisation's delivery rules -------------------------------------------------------------------


class DeliverySettingsOut(msgspec.Struct):
    count_payload_rejections: bool
    """Whether a refusal of one payload (a non-retryable 4xx other than 401, 403, 404, 405 and 410,
    which always count) counts towards auto-disable."""
    max_in_flight: int
    """The organisation's default cap: deliveries of one webhook queued or being sent at once (1 to
    1000), for webhooks without a cap of their own; more wait in PostgreSQL without using a retry."""
    auto_disable_after: int
    """Failed deliveries in a row (not attempts; test sends never count) that disable a webhook."""
    warnings_at: list[int]
    """Failed deliveries in a row at which a webhook.failing event warns."""


class DeliverySettingsIn(msgspec.Struct):
    """The rules to change: a field left out keeps its current value. Decoded loosely, like the
    webhook bodies: `delivery_settings.parse_rules` names each bad or unknown field."""

    count_payload_rejections: Annotated[
        Any, _loose({"type": "boolean"}, "Count refusals of a payload (400, 409, 413, 422, ...) too.")
    ] = msgspec.UNSET
    max_in_flight: Annotated[Any, _loose(CAP, "Default cap on deliveries of one webhook in flight at once.")] = (
        msgspec.UNSET
    )
