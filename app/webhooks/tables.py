"""Webhooks, their deliveries and attempts, retry policies, and bulk jobs."""

from __future__ import annotations

import enum

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    Boolean,
    DoublePrecision,
    ForeignKey,
    Integer,
    OnDelete,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.table import Table

from app.accounts.tables import Organization, User
from app.events.tables import Event


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    processing = "processing"
    success = "success"
    failed = "failed"  # an attempt failed and another is scheduled at next_attempt_at
    dlq = "dlq"


class DlqReason(enum.StrEnum):
    retries_exhausted = "retries_exhausted"
    non_retryable = "non_retryable"  # a 4xx other than 408 / 429
    gone = "gone"  # 410: the receiver says the endpoint is gone for good
    webhook_disabled = "webhook_disabled"
    webhook_deleted = "webhook_deleted"
    payload_erased = "payload_erased"  # its event's payload was erased (GDPR) before it was sent


class Trigger(enum.StrEnum):
    scheduled = "scheduled"
    manual = "manual"
    test = "test"


class RetryPolicy(Table, tablename="retry_policies"):
    """The organisation's default policy (one row per organisation; absent means the built-in default)."""

    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, unique=True, null=False)
    strategy = Varchar(length=16, default="exponential")
    base_delay_ms = Integer(default=1000)
    max_delay_ms = Integer(default=3_600_000)
    max_retries = Integer(default=8)
    jitter = Boolean(default=True)
    updated_at = Timestamptz()


class DeliverySettings(Table, tablename="delivery_settings"):
    """An organisation's rules for its webhooks' deliveries (one row per organisation; absent: the defaults)."""

    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, unique=True, null=False)
    # Whether a receiver's refusal of one payload (400, 409, 413, 422: the other non-retryable 4xx)
    # counts towards auto-disable. Off by default: it says "not this event", not "this endpoint is down".
    count_payload_rejections = Boolean(default=False)
    # The default cap on deliveries in flight (queued or being sent) per webhook of the organisation.
    max_in_flight = Integer(default=10)
    updated_at = Timestamptz()


class Webhook(Table, tablename="webhooks"):
    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, index=True, null=False)
    name = Varchar(length=100)
    url = Text()
    description = Text(default="")
    event_patterns = Array(base_column=Varchar(length=120))
    enabled = Boolean(default=True)
    disabled_reason = Text(null=True, default=None)
    disabled_at = Timestamptz(null=True, default=None)
    timeout_seconds = Integer(default=15)
    headers = JSONB(default="{}")
    # The per-webhook override of the organisation's policy, in CONTRACT's shape; null: use the default.
    retry_policy = JSONB(null=True, default=None)
    # Sealed (app.core.crypto) with context "webhook:<id>". During a rotation the previous secret stays
    # valid, and is signed with too, until previous_secret_expires_at.
    secret = Text()
    previous_secret = Text(null=True, default=None)
    previous_secret_expires_at = Timestamptz(null=True, default=None)
    consecutive_failures = Integer(default=0)
    # At most this many of its deliveries in flight at once (NULL: the organisation's default), and
    # optionally at most this many started per second; enforced across workers (app.webhooks.limits).
    max_in_flight = Integer(null=True, default=None)
    rate_limit_per_second = DoublePrecision(null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    # Deleting keeps the row (deliveries and attempts stay for audit); lists leave it out.
    deleted_at = Timestamptz(null=True, default=None)


class WebhookDelivery(Table, tablename="webhook_deliveries"):
    """One per (event, webhook). Its id is the X-InTime-Delivery / webhook-id header on every attempt."""

    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, null=False)
    webhook = ForeignKey(Webhook, db_column_name="webhook_id", on_delete=OnDelete.cascade, null=False)
    event = ForeignKey(Event, db_column_name="event_id", on_delete=OnDelete.cascade, null=False)
    event_type = Varchar(length=100)
    status = Varchar(length=16, default=DeliveryStatus.pending)
    attempt_count = Integer(default=0)
    # attempt_count when the current run of tries began: a replay or a DLQ retry starts a fresh retry
    # budget, so the policy counts attempt_count - attempts_base.
    attempts_base = Integer(default=0)
    # Which kind of attempt the next claim makes: scheduled (fan-out, retries), manual (replay), test.
    next_trigger = Varchar(length=16, default=Trigger.scheduled)
    next_attempt_at = Timestamptz(null=True, default=None)
    lease_expires_at = Timestamptz(null=True, default=None)
    # The Dramatiq message carrying it to a worker; NULL: held in PostgreSQL until it is due and its
    # webhook has a free slot (app.webhooks.dispatch).
    message_id = UUID(null=True, default=None)
    # When the scheduler's sweep last re-enqueued it (its message looked lost); kept apart from
    # next_attempt_at so that the schedule itself never moves.
    requeued_at = Timestamptz(null=True, default=None)
    last_status_code = Integer(null=True, default=None)
    last_error = Text(null=True, default=None)
    dlq_reason = Varchar(length=32, null=True, default=None)
    dlq_at = Timestamptz(null=True, default=None)
    # Cleared from the DLQ by an admin: kept, marked, for audit.
    cleared_at = Timestamptz(null=True, default=None)
    cleared_by = ForeignKey(User, db_column_name="cleared_by", on_delete=OnDelete.set_null, null=True, default=None)
    created_at = Timestamptz()
    updated_at = Timestamptz()
    completed_at = Timestamptz(null=True, default=None)


class DeliveryAttempt(Table, tablename="delivery_attempts"):
    id = UUID(primary_key=True)
    delivery = ForeignKey(WebhookDelivery, db_column_name="delivery_id", on_delete=OnDelete.cascade, null=False)
    attempt_number = Integer()
    trigger = Varchar(length=16, default=Trigger.scheduled)
    started_at = Timestamptz()
    duration_ms = Integer(default=0)
    request_url = Text()
    request_headers = JSONB(default="{}")
    response_status = Integer(null=True, default=None)
    response_headers = JSONB(null=True, default=None)
    response_body = Text(null=True, default=None)
    response_truncated = Boolean(default=False)
    error_class = Varchar(length=32, null=True, default=None)
    error_message = Text(null=True, default=None)
    # What followed this attempt: the delay before the next one, or none (success, DLQ).
    next_delay_ms = Integer(null=True, default=None)
    outcome = Varchar(length=16, default="")


class Job(Table, tablename="jobs"):
    """A background bulk job (DLQ retry / clear, replay-since) whose progress a page polls."""

    id = UUID(primary_key=True)
    org = ForeignKey(Organization, db_column_name="org_id", on_delete=OnDelete.cascade, index=True, null=False)
    kind = Varchar(length=32)
    status = Varchar(length=16, default="queued")
    params = JSONB(default="{}")
    total = Integer(default=0)
    processed = Integer(default=0)
    errors = Integer(default=0)
    created_by = ForeignKey(User, db_column_name="created_by", on_delete=OnDelete.set_null, null=True, default=None)
    created_at = Timestamptz()
    finished_at = Timestamptz(null=True, default=None)


class WebhookStatsHourly(Table, tablename="webhook_stats_hourly"):
    """Per webhook and hour: attempt counts and a latency histogram, kept up to date as attempts are
    recorded, so the debugger's figures and charts read at most 168 rows whatever the history holds."""

    webhook = ForeignKey(Webhook, db_column_name="webhook_id", on_delete=OnDelete.cascade, null=False)
    hour = Timestamptz()
    deliveries = Integer(default=0)  # first attempts: deliveries that started in this hour
    attempts = Integer(default=0)
    successes = Integer(default=0)
    failures = Integer(default=0)
    # Attempt durations by bucket (upper bounds in app.webhooks.stats.BUCKETS_MS, the last is open).
    latency_buckets = Array(base_column=Integer())
