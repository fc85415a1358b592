"""Webhooks: validation, create / change / delete, enable / disable, secret rotation, retry config.

Every function takes the caller's organisation id and never touches another organisation's rows.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core import db, fields, problems
from app.core.crypto import get_keyring
from app.core.fields import as_uuid
from app.core.outbound import OutboundRefused, check_url
from app.events import services as events
from app.webhooks import patterns, retry, signing
from app.webhooks.tables import DeliveryStatus, DlqReason, RetryPolicy, Webhook

ROTATION_OVERLAP = timedelta(hours=24)
MAX_HEADERS = 20
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
# Headers we set ourselves (or that HTTP owns): a custom header may not replace them.
RESERVED_HEADERS = {"host", "content-type", "content-length", "user-agent", "connection", "transfer-encoding"}
RESERVED_PREFIXES = ("x-intime-", "webhook-")


class WebhookInvalid(fields.Invalid):
    """A webhook that cannot be saved."""


NotFound = problems.NotFound  # the web layer answers it with a 404


def _secret_context(webhook_id: uuid.UUID) -> str:
    return f"webhook:{webhook_id}"


async def catalog_domains() -> dict[str, str]:
    return {name: row["domain"] for name, row in (await events.known_types()).items()}


HEADER_VALUE_RE = re.compile(r"^[\x20-\x7e\t]{0,2000}$")
SENSITIVE_WORDS = ("auth", "token", "secret", "key", "password", "cookie", "signature", "session", "credential")
MASK = "••••"


def is_sensitive(header_name: str) -> bool:
    return any(word in header_name.lower() for word in SENSITIVE_WORDS)


def mask_value(name: str, value: str) -> str:
    """What pages, the API and delivery logs show of a custom header: credentials masked."""
    if not is_sensitive(name):
        return value
    return MASK + value[-4:] if len(value) > 12 else MASK


def _check_headers(raw: Any, errors: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """Custom headers; a value sent back exactly as we showed it masked keeps the stored value."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors["headers"] = "must be an object of header names to values"
        return {}
    if len(raw) > MAX_HEADERS:
        errors["headers"] = f"at most {MAX_HEADERS} custom headers"
    headers: dict[str, str] = {}
    for name, value in raw.items():
        lowered = str(name).lower()
        if not HEADER_NAME_RE.match(str(name)):
            errors["headers"] = f"{name!r} is not a valid header name"
        elif lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES):
            errors["headers"] = f"{name} is set by InTime and cannot be overridden"
        elif isinstance(value, str) and name in current and value == mask_value(name, current[name]):
            headers[str(name)] = current[name]  # sent back as we showed it: keep the stored value
        elif not isinstance(value, str) or not HEADER_VALUE_RE.match(value):
            errors["headers"] = (
                f"the value of {name} must be printable ASCII text of at most 2000 characters on one line"
            )
        else:
            headers[str(name)] = value
    return headers


def seal_headers(webhook_id: uuid.UUID, headers: dict[str, str]) -> str:
    """Custom headers often carry credentials: every value is sealed at rest, like the secret."""
    ring = get_keyring()
    return json.dumps({name: ring.seal(value, f"webhook:{webhook_id}:header") for name, value in headers.items()})


def open_headers(webhook_id: uuid.UUID, stored: Any) -> dict[str, str]:
    data = json.loads(stored) if isinstance(stored, str) else stored or {}
    ring = get_keyring()
    return {name: ring.open(value, f"webhook:{webhook_id}:header") for name, value in data.items()}


def shown_headers(webhook: Webhook) -> dict[str, str]:
    return {name: mask_value(name, value) for name, value in open_headers(webhook.id, webhook.headers).items()}


async def validate(data: dict[str, Any], *, partial: bool = False, current_webhook: Webhook | None = None) -> dict:
    """Check API or form input; return the columns to write. With `partial`, absent fields stay."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}

    def present(field: str) -> bool:
        return field in data or not partial

    if present("name"):
        name = fields.text(data, "name", errors, "Give the webhook a name of 1-100 characters.", limit=100)
        if name is not None:
            out["name"] = name
    if present("url"):
        url = fields.text(data, "url", errors, "Enter the URL that should receive the events.", limit=4096)
        if url is not None:
            try:
                out["url"] = await check_url(url)
            except OutboundRefused as refused:
                errors["url"] = str(refused)
    if "description" in data:
        description = fields.text(data, "description", errors, "At most 2000 characters.", limit=2000, required=False)
        if description is not None:
            out["description"] = description
    if present("event_patterns"):
        raw = data.get("event_patterns")
        if isinstance(raw, str):
            raw = [part for part in re.split(r"[\s,]+", raw) if part]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            errors["event_patterns"] = "A list of event types or patterns, e.g. job.created, job.*, recruiting.*, *."
        else:
            try:
                out["event_patterns"] = patterns.validate_patterns(raw, await catalog_domains())
            except patterns.PatternError as error:
                errors["event_patterns"] = str(error)[0].upper() + str(error)[1:] + "."
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            errors["enabled"] = "true or false"
        else:
            out["enabled"] = data["enabled"]
    if "timeout_seconds" in data:
        timeout = data["timeout_seconds"]
        if isinstance(timeout, str) and timeout.strip().isdigit():
            timeout = int(timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 60:
            errors["timeout_seconds"] = "A whole number of seconds from 1 to 60."
        else:
            out["timeout_seconds"] = timeout
    if "headers" in data:
        current = open_headers(current_webhook.id, current_webhook.headers) if current_webhook else {}
        out["headers"] = _check_headers(data["headers"], errors, current)
    if "retry_policy" in data:
        if data["retry_policy"] is None:
            out["retry_policy"] = None
        else:
            try:
                out["retry_policy"] = json.dumps(retry.parse_policy(data["retry_policy"]).as_dict())
            except retry.PolicyError as error:
                for field, message in error.errors.items():
                    errors[f"retry_policy.{field}"] = message
    unknown = sorted(
        set(data)
        - {"name", "url", "description", "event_patterns", "enabled", "timeout_seconds", "headers", "retry_policy"}
    )
    if unknown:
        errors[unknown[0]] = f"Unknown field {', '.join(unknown)}."
    if errors:
        raise WebhookInvalid(errors)
    return out


async def create_webhook(org_id: uuid.UUID, data: dict[str, Any]) -> tuple[Webhook, str]:
    """Returns the row and the new secret, which is shown this once."""
    columns = await validate(data)
    webhook_id = uuid.uuid4()
    columns["headers"] = seal_headers(webhook_id, columns.get("headers", {}))
    secret = signing.generate_secret()
    webhook = Webhook(
        id=webhook_id, org=org_id, secret=get_keyring().seal(secret, _secret_context(webhook_id)), **columns
    )
    await webhook.save()
    return webhook, secret


async def get_webhook(org_id: uuid.UUID, webhook_id: uuid.UUID | str) -> Webhook:
    key = as_uuid(webhook_id)
    if key is None:
        raise NotFound("No such webhook.")
    webhook = (
        await Webhook.objects()
        .where((Webhook.id == key) & (Webhook.org == org_id) & Webhook.deleted_at.is_null())
        .first()
    )
    if webhook is None:
        raise NotFound("No such webhook in this organisation.")
    return webhook


async def list_webhooks(
    org_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None = None, limit: int | None = None
) -> list[Webhook]:
    """Pages list them by name; the API pages through them in creation order (keyset, `after`)."""
    query = Webhook.objects().where((Webhook.org == org_id) & Webhook.deleted_at.is_null())
    if limit is None:
        return await query.order_by(Webhook.name)
    if after is not None:
        at, last_id = after
        query = query.where((Webhook.created_at > at) | ((Webhook.created_at == at) & (Webhook.id > last_id)))
    return await query.order_by(Webhook.created_at).order_by(Webhook.id).limit(limit)


async def update_webhook(org_id: uuid.UUID, webhook_id: uuid.UUID, data: dict[str, Any]) -> Webhook:
    webhook = await get_webhook(org_id, webhook_id)
    columns = await validate(data, partial=True, current_webhook=webhook)
    if "headers" in columns:
        columns["headers"] = seal_headers(webhook.id, columns["headers"])
    enabled = columns.pop("enabled", None)
    if columns:
        columns["updated_at"] = datetime.now(UTC)
        await Webhook.update(columns).where(Webhook.id == webhook.id)
    if enabled is not None and enabled != webhook.enabled:
        await set_enabled(org_id, webhook.id, enabled)
    return await get_webhook(org_id, webhook.id)


async def set_enabled(org_id: uuid.UUID, webhook_id: uuid.UUID, enabled: bool, reason: str = "disabled by an admin"):
    """Disabling sends what is still waiting to the DLQ (reason webhook_disabled) and publishes
    webhook.disabled; enabling starts the failure count afresh and publishes webhook.enabled."""
    webhook = await get_webhook(org_id, webhook_id)
    async with db.connection() as conn, conn.transaction():
        if enabled:
            await conn.execute(
                "UPDATE webhooks SET enabled = true, disabled_reason = NULL, disabled_at = NULL, "
                "consecutive_failures = 0, updated_at = now() WHERE id = $1",
                webhook.id,
            )
            await events.publish_in(
                conn, org_id, "webhook.enabled", {"webhook_id": str(webhook.id), "name": webhook.name}
            )
        else:
            await disable_in_transaction(conn, org_id, webhook.id, reason)


async def disable_in_transaction(conn, org_id: uuid.UUID, webhook_id: uuid.UUID, reason: str) -> bool:
    """Disable (if enabled) inside the caller's transaction; also used by the delivery engine."""
    row = await conn.fetchrow(
        "UPDATE webhooks SET enabled = false, disabled_reason = $2, disabled_at = now(), updated_at = now() "
        "WHERE id = $1 AND enabled RETURNING name",
        webhook_id,
        reason,
    )
    if row is None:
        return False
    await dead_letter_waiting(conn, webhook_id, DlqReason.webhook_disabled)
    await events.publish_in(
        conn, org_id, "webhook.disabled", {"webhook_id": str(webhook_id), "name": row["name"], "reason": reason}
    )
    return True


async def dead_letter_waiting(conn, webhook_id: uuid.UUID, reason: DlqReason) -> int:
    """Deliveries waiting for a webhook that will not take them go to the DLQ, each announced."""
    rows = await conn.fetch(
        "UPDATE webhook_deliveries SET status = 'dlq', dlq_reason = $2, dlq_at = now(), next_attempt_at = NULL, "
        "lease_expires_at = NULL, updated_at = now() "
        "WHERE webhook_id = $1 AND status IN ('pending', 'failed') RETURNING id, org_id, event_type",
        webhook_id,
        reason.value,
    )
    for row in rows:
        await announce_dead_letter(conn, row["org_id"], webhook_id, row["id"], row["event_type"], reason.value)
    return len(rows)


async def announce_dead_letter(conn, org_id, webhook_id, delivery_id, event_type: str, reason: str) -> None:
    # Not for the portal's own webhook.* events: a subscriber of dead-letter events that is itself
    # failing would otherwise feed on its own failures without end.
    if event_type.startswith("webhook."):
        return
    await events.publish_in(
        conn,
        org_id,
        "webhook.delivery.dead_lettered",
        {
            "webhook_id": str(webhook_id),
            "delivery_id": str(delivery_id),
            "event_type": event_type,
            "reason": reason,
        },
    )


async def delete_webhook(org_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """Soft delete: deliveries and attempts stay for audit; waiting deliveries go to the DLQ."""
    webhook = await get_webhook(org_id, webhook_id)
    async with db.connection() as conn, conn.transaction():
        await conn.execute(
            "UPDATE webhooks SET deleted_at = now(), enabled = false, updated_at = now() WHERE id = $1", webhook.id
        )
        await dead_letter_waiting(conn, webhook.id, DlqReason.webhook_deleted)


async def rotate_secret(org_id: uuid.UUID, webhook_id: uuid.UUID) -> str:
    """A new secret signs from now on; the old one also signs, and stays valid, for 24 hours."""
    webhook = await get_webhook(org_id, webhook_id)
    secret = signing.generate_secret()
    await Webhook.update(
        {
            Webhook.previous_secret: webhook.secret,
            Webhook.previous_secret_expires_at: datetime.now(UTC) + ROTATION_OVERLAP,
            Webhook.secret: get_keyring().seal(secret, _secret_context(webhook.id)),
            Webhook.updated_at: datetime.now(UTC),
        }
    ).where(Webhook.id == webhook.id)
    return secret


def live_secrets(
    webhook_id: uuid.UUID, sealed: str, previous: str | None, previous_expires: datetime | None, now: datetime
) -> list[str]:
    """The secrets that sign a request now, newest first."""
    ring = get_keyring()
    secrets = [ring.open(sealed, _secret_context(webhook_id))]
    if previous and previous_expires and previous_expires > now:
        secrets.append(ring.open(previous, _secret_context(webhook_id)))
    return secrets


# --- retry configuration --------------------------------------------------------------------------------


async def org_policy(org_id: uuid.UUID) -> retry.Policy:
    row = await RetryPolicy.select().where(RetryPolicy.org == org_id).first()
    if row is None:
        return retry.DEFAULT_POLICY
    return retry.Policy(row["strategy"], row["base_delay_ms"], row["max_delay_ms"], row["max_retries"], row["jitter"])


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


def is_waiting(status: str) -> bool:
    return status in (DeliveryStatus.pending, DeliveryStatus.failed)
