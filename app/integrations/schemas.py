"""The integrations API's bodies, as /schema documents them (CONTRACT: integrations, providers, failover).

Request bodies are documented here but reach the handlers as sent (`JSONBody[Struct | Any]`):
app.integrations.setup and failover check every field, unknown ones included, and answer one 422
naming each bad field. Decoding into the Struct first would drop unknown fields silently and turn a
wrong type into a 400 about the first field only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

Mode = Literal["automatic", "manual"]  # failover.MODES
Kind = Literal[
    "email", "sms", "calendar", "job_board", "background_check", "hris", "video", "esignature", "other"
]  # fmt: skip  (the keys of setup.KINDS; tests/unit/test_integration_schemas.py keeps them equal)


# --- Requests -----------------------------------------------------------------------------------------


class NewIntegration(msgspec.Struct):
    name: str
    """1-100 characters, unique in the organisation (case aside)."""
    kind: Kind
    description: str | UnsetType = UNSET
    """At most 2000 characters."""


class IntegrationChanges(msgspec.Struct):
    """Absent fields stay as they are."""

    name: str | UnsetType = UNSET
    kind: Kind | UnsetType = UNSET
    description: str | UnsetType = UNSET


class NewProvider(msgspec.Struct):
    name: str
    """1-100 characters, unique in the integration."""
    endpoint_url: str
    """Calls go to `POST <endpoint_url>/<operation>`."""
    health_url: str
    """Health checks GET this; 2xx is up."""
    kind: str | UnsetType = UNSET
    """At most 40 characters, e.g. sendgrid."""
    priority: int | UnsetType = UNSET
    """0-1000, lower first; absent: after the others, in steps of 10."""
    credentials: str | UnsetType | None = UNSET
    """Sent as a Bearer token; write-only. Not together with oauth_connection_id."""
    oauth_connection_id: uuid.UUID | UnsetType | None = UNSET
    """One of the organisation's OAuth connections, whose access token authorises calls."""
    enabled: bool | UnsetType = UNSET
    rate_limit_per_hour: int | UnsetType | None = UNSET
    """1-100,000,000 calls an hour; null: no limit."""


class ProviderChanges(msgspec.Struct):
    """Absent fields stay as they are; `credentials: null` removes them."""

    name: str | UnsetType = UNSET
    endpoint_url: str | UnsetType = UNSET
    health_url: str | UnsetType = UNSET
    kind: str | UnsetType = UNSET
    priority: int | UnsetType = UNSET
    credentials: str | UnsetType | None = UNSET
    oauth_connection_id: uuid.UUID | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    rate_limit_per_hour: int | UnsetType | None = UNSET


class FailoverSettings(msgspec.Struct):
    """The settings to change; absent ones stay. Limits as in failover.FAILOVER_LIMITS."""

    failover_mode: Mode | UnsetType = UNSET
    failback_mode: Mode | UnsetType = UNSET
    failback_after_seconds: int | UnsetType = UNSET
    health_interval_seconds: int | UnsetType = UNSET
    breaker_failure_threshold: int | UnsetType = UNSET
    breaker_failure_rate_percent: int | UnsetType = UNSET
    breaker_min_calls: int | UnsetType = UNSET
    breaker_window_seconds: int | UnsetType = UNSET
    breaker_cooldown_seconds: int | UnsetType = UNSET
    breaker_cooldown_max_seconds: int | UnsetType = UNSET
    breaker_probe_successes: int | UnsetType = UNSET


class TriggerFailover(msgspec.Struct):
    reason: str
    """Why: it goes into the audit trail."""
    to_provider_id: uuid.UUID | None = None
    """Where traffic goes; absent: the next healthy provider after the active one."""


# --- Responses ----------------------------------------------------------------------------------------


class FailoverConfig(msgspec.Struct):
    failover_mode: Mode
    failback_mode: Mode
    failback_after_seconds: int
    health_interval_seconds: int
    breaker_failure_threshold: int
    breaker_failure_rate_percent: int
    breaker_min_calls: int
    breaker_window_seconds: int
    breaker_cooldown_seconds: int
    breaker_cooldown_max_seconds: int
    breaker_probe_successes: int


class ProviderOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    kind: str
    priority: int
    endpoint_url: str
    health_url: str
    enabled: bool
    active: bool
    """Traffic goes to it now."""
    has_credentials: bool
    """Whether credentials are stored; they are never shown."""
    oauth_connection_id: uuid.UUID | None
    circuit: Literal["closed", "open", "half_open"]
    circuit_retry_at: float | None
    """Unix time when an open circuit lets a probe through."""
    last_checked_at: datetime | None
    last_ok: bool | None
    last_latency_ms: int | None
    last_error: str | None
    rate_limit_per_hour: int | None
    used_this_hour: int | None


class IntegrationOut(msgspec.Struct):
    id: uuid.UUID
    name: str
    kind: str
    description: str
    active_provider: str | None
    """The name of the provider traffic goes to."""
    healthy: bool
    failover: FailoverConfig
    providers: list[ProviderOut]
    created_at: datetime


class AuditEntry(msgspec.Struct):
    kind: Literal["failover", "failback"]
    trigger: Literal["automatic", "manual"]
    reason: str
    actor: str
    at: datetime
    from_provider: str | None
    to_provider: str


class IntegrationDetail(IntegrationOut):
    audit: list[AuditEntry]
    """The latest switches first."""


class IntegrationList(msgspec.Struct):
    items: list[IntegrationOut]
    next_cursor: str | None


class FailoverMoved(msgspec.Struct):
    from_: str | None = msgspec.field(name="from")
    to: str
    kind: Literal["failover", "failback"]


T = TypeVar("T", bound=msgspec.Struct)


def shaped(value: Any, into: type[T]) -> T:
    """A service's dict as its response Struct (the names and values are the same)."""
    return msgspec.convert(value, into, strict=False)
