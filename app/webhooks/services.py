"""Webhooks: create, read, change, delete, enable and disable.

Every function takes the caller's organisation id and never touches another organisation's rows.
What input is acceptable: validation.py; secrets and custom headers at rest: secrets.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app.core import db
from app.core.fields import as_uuid
from app.core.problems import NotFound
from app.events import services as events
from app.webhooks import dlq, signing, statements
from app.webhooks.secrets import seal_headers, seal_secret
from app.webhooks.tables import Webhook
from app.webhooks.validation import validate


async def create_webhook(org_id: uuid.UUID, data: dict[str, Any]) -> tuple[Webhook, str]:
    """Returns the row and the new secret, which is shown this once."""
    columns = await validate(data)
    webhook_id = uuid.uuid4()
    columns["headers"] = seal_headers(webhook_id, columns.get("headers", {}))
    secret = signing.generate_secret()
    webhook = Webhook(id=webhook_id, org=org_id, secret=seal_secret(webhook_id, secret), **columns)
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
    """Disabling publishes webhook.disabled, and what still waits goes to the DLQ (reason
    webhook_disabled) soon after, in batches (dlq.drain_stopped); enabling starts the failure count
    afresh and publishes webhook.enabled."""
    webhook = await get_webhook(org_id, webhook_id)
    async with db.connection() as conn, conn.transaction():
        if enabled:
            await conn.execute(statements.ENABLE_WEBHOOK, webhook.id)
            await events.publish_in(
                conn, org_id, "webhook.enabled", {"webhook_id": str(webhook.id), "name": webhook.name}
            )
        else:
            await dlq.disable_in_transaction(conn, org_id, webhook.id, reason)


async def delete_webhook(org_id: uuid.UUID, webhook_id: uuid.UUID) -> None:
    """Soft delete: deliveries and attempts stay for audit; waiting deliveries go to the DLQ soon
    after, in batches (dlq.drain_stopped)."""
    webhook = await get_webhook(org_id, webhook_id)
    async with db.connection() as conn, conn.transaction():
        await conn.execute(statements.DELETE_WEBHOOK, webhook.id)
