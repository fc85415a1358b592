"""Integrations, their providers in priority order, health checks, the failover audit trail, and the
background calls made to them."""

from __future__ import annotations

from piccolo.columns import JSONB, UUID, Boolean, ForeignKey, Integer, OnDelete, Text, Timestamptz, Varchar
from piccolo.table import Table

from app.accounts.tables import Organization


class Integration(Table, tablename="integrations"):
    """One capability (email delivery, SMS, calendar, ...) served by one active provider at a time."""

    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    name = Varchar(length=100)
    kind = Varchar(length=40)
    description = Text(default="")
    # The provider traffic goes to; null: the first enabled one by priority.
    active_provider_id = UUID(null=True, default=None)
    failover_mode = Varchar(length=16, default="automatic")  # automatic | manual
    failback_mode = Varchar(length=16, default="automatic")  # automatic | manual
    failback_after_seconds = Integer(default=300)  # the primary healthy this long before traffic returns
    primary_healthy_since = Timestamptz(null=True, default=None)
    health_interval_seconds = Integer(default=60)
    # The circuit breaker of each of its providers (app.integrations.breaker).
    breaker_failure_threshold = Integer(default=5)
    breaker_failure_rate_percent = Integer(default=50)
    breaker_min_calls = Integer(default=10)
    breaker_window_seconds = Integer(default=60)
    breaker_cooldown_seconds = Integer(default=30)
    breaker_cooldown_max_seconds = Integer(default=600)
    breaker_probe_successes = Integer(default=3)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class IntegrationProvider(Table, tablename="integration_providers"):
    id = UUID(primary_key=True)
    integration = ForeignKey(Integration, db_column_name="integration_id", on_delete=OnDelete.cascade, null=False)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    name = Varchar(length=100)
    kind = Varchar(length=40, default="")  # e.g. sendgrid, mailgun
    priority = Integer(default=0)  # lower goes first; the lowest enabled one is the primary
    endpoint_url = Text()
    health_url = Text()
    # Sealed (app.core.crypto) with context "integration-provider:<id>": sent as a Bearer token.
    credentials = Text(null=True, default=None)
    oauth_connection_id = UUID(null=True, default=None)  # instead of credentials: an OAuth connection
    enabled = Boolean(default=True)
    rate_limit_per_hour = Integer(null=True, default=None)
    last_checked_at = Timestamptz(null=True, default=None)
    check_enqueued_at = Timestamptz(null=True, default=None)
    last_ok = Boolean(null=True, default=None)
    last_latency_ms = Integer(null=True, default=None)
    last_error = Text(null=True, default=None)
    # Set when the provider answered a call 401/403: it stays out of traffic (health checks carry no
    # credentials, so they cannot clear it) until an admin saves the provider again.
    credentials_rejected_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()


class HealthCheck(Table, tablename="health_checks"):
    id = UUID(primary_key=True)
    provider = ForeignKey(IntegrationProvider, db_column_name="provider_id", on_delete=OnDelete.cascade, null=False)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    at = Timestamptz()
    ok = Boolean()
    latency_ms = Integer(null=True, default=None)
    status_code = Integer(null=True, default=None)
    error_class = Varchar(length=32, null=True, default=None)


class FailoverEvent(Table, tablename="failover_events"):
    """The audit trail: every switch of an integration's active provider."""

    id = UUID(primary_key=True)
    integration = ForeignKey(Integration, db_column_name="integration_id", on_delete=OnDelete.cascade, null=False)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    kind = Varchar(length=16)  # failover | failback
    from_provider_id = UUID(null=True, default=None)
    to_provider_id = UUID()
    # The names at the time of the switch: the row still reads right after a provider is removed.
    from_provider_name = Text(null=True, default=None)
    to_provider_name = Text(null=True, default=None)
    trigger = Varchar(length=16)  # automatic | manual
    reason = Text(default="")
    actor = Text(default="system")
    at = Timestamptz()


class IntegrationCall(Table, tablename="integration_calls"):
    """A call made in the background (app.integrations.calls.enqueue_call), from enqueue to outcome.

    The row is the call's truth, the Dramatiq message only its wake-up: a message lost with Redis is
    re-sent by the scheduler's sweep (app.integrations.call_sweep) from what is recorded here. States
    (app.integrations.call_rows): queued / failed / deferred (waiting until next_attempt_at) ->
    running (leased by a worker) -> succeeded | rejected | abandoned."""

    id = UUID(primary_key=True)  # what the message carries
    # The caller's id of the call, sent as the Idempotency-Key of every attempt; unique per integration.
    call_id = Varchar(length=255)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    integration = ForeignKey(Integration, db_column_name="integration_id", on_delete=OnDelete.cascade, null=False)
    operation = Varchar(length=100)
    payload = JSONB()
    status = Varchar(length=16, default="queued")
    attempts = Integer(default=0)  # claims so far: fences what a worker records against a later claim
    failures = Integer(default=0)
    deferrals = Integer(default=0)
    # The provider a rate-limit slot is booked at for the next attempt (a deferral's booking).
    reserved_for = UUID(null=True, default=None)
    next_attempt_at = Timestamptz(null=True, default=None)  # while waiting: due then, by PostgreSQL's clock
    lease_expires_at = Timestamptz(null=True, default=None)  # while running: the worker is presumed dead after
    requeued_at = Timestamptz(null=True, default=None)  # the sweep's last re-send of this schedule
    last_error = Text(null=True, default=None)
    provider_name = Text(null=True, default=None)  # who answered last
    status_code = Integer(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    completed_at = Timestamptz(null=True, default=None)
