"""What an admin does to one delivery: send a test, replay it, retry or clear it from the DLQ.

A replay (and a DLQ retry, which is a replay of a dead-lettered delivery) adds an attempt to the same
delivery, so the receiver sees the same webhook-id and can de-duplicate; it also starts a fresh retry
budget, so a retried delivery gets the whole policy again. A delivery whose event's payload was erased
(lifecycle/erase.py) is never replayed: it would go out empty. Many at once: bulk.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC

from app.core import db, queue
from app.core.fields import as_uuid
from app.core.problems import NotFound
from app.events import services as events
from app.webhooks import dispatch, services, statements


class Conflict(RuntimeError):
    pass


async def send_test(org_id: uuid.UUID, webhook_id: uuid.UUID) -> uuid.UUID:
    """Publish a webhook.test event and its one delivery, to this webhook only, in one transaction: the
    event is marked fanned out at once, so no other webhook subscribed to system events gets it."""
    webhook = await services.get_webhook(org_id, webhook_id)
    payload = {"message": "This is a test event from InTime Integrations.", "webhook_id": str(webhook.id)}
    message_id = uuid.uuid4()
    async with db.connection() as conn, conn.transaction():
        event_id = await events.publish_in(conn, org_id, "webhook.test", payload)
        delivery_id = await conn.fetchval(
            statements.INSERT_TEST_DELIVERY, uuid.uuid4(), org_id, webhook.id, event_id, message_id
        )
        await conn.execute(statements.MARK_EVENT_FANNED_OUT, event_id)
    # Straight to the queue, outside the webhook's cap (if this is lost, the sweep sends it again).
    await queue.asend_batches([(str(message_id), str(webhook.id), [str(delivery_id)])])
    return delivery_id


async def replay(org_id: uuid.UUID, delivery_id: uuid.UUID | str, *, only_dlq: bool = False) -> uuid.UUID:
    key = as_uuid(delivery_id)
    if key is None:
        raise NotFound("No such delivery.")
    statuses = ["dlq"] if only_dlq else ["success", "failed", "dlq", "pending"]
    async with db.connection() as conn:
        done = await conn.fetchrow(statements.REPLAY, [key], org_id, statuses)
        if done is None:
            row = await conn.fetchrow(statements.WHY_NOT_REPLAYED, key, org_id)
            if row is None:
                raise NotFound("No such delivery in this organisation.")
            if row["erased_at"] is not None:
                erased = row["erased_at"].astimezone(UTC)
                raise Conflict(
                    f"Its event's payload was erased on {erased:%Y-%m-%d %H:%M:%S} UTC; there is nothing to send."
                )
            if row["deleted_at"] is not None:
                raise Conflict("Its webhook was deleted; there is nowhere to send it.")
            if not row["enabled"]:
                raise Conflict("Its webhook is disabled: enable the webhook first, then retry.")
            if row["status"] == "processing":
                raise Conflict("It is being sent right now; wait for this attempt to finish.")
            raise Conflict(f"Only dead-lettered deliveries can be retried from the DLQ (this one is {row['status']}).")
    await dispatch.dispatch([done["webhook_id"]])  # at once if the webhook has room, else when it has
    return key


async def clear(org_id: uuid.UUID, delivery_id: uuid.UUID | str, user_id: uuid.UUID | None) -> None:
    key = as_uuid(delivery_id)
    if key is None:
        raise NotFound("No such delivery.")
    async with db.connection() as conn:
        done = await conn.fetchval(statements.CLEAR_ONE, key, org_id, user_id)
        if done is None:
            exists = await conn.fetchval(statements.DELIVERY_STATUS, key, org_id)
            if exists is None:
                raise NotFound("No such delivery in this organisation.")
            raise Conflict("It is not in the DLQ (or was cleared already).")
