"""A webhook's secrets and custom headers at rest: sealed with the keyring, opened only to sign and send.

Each sealed value is bound to its webhook (the keyring's context), so a value copied from one row to
another does not open. Rotation keeps the previous secret signing for a while, because receivers
cannot switch to a new secret at the instant we do.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.crypto import get_keyring
from app.webhooks import signing
from app.webhooks.tables import Webhook

ROTATION_OVERLAP = timedelta(hours=24)
SENSITIVE_WORDS = ("auth", "token", "secret", "key", "password", "cookie", "signature", "session", "credential")
MASK = "••••"


def _secret_context(webhook_id: uuid.UUID) -> str:
    return f"webhook:{webhook_id}"


def seal_secret(webhook_id: uuid.UUID, secret: str) -> str:
    return get_keyring().seal(secret, _secret_context(webhook_id))


def is_sensitive(header_name: str) -> bool:
    return any(word in header_name.lower() for word in SENSITIVE_WORDS)


def mask_value(name: str, value: str) -> str:
    """What pages, the API and delivery logs show of a custom header: credentials masked."""
    if not is_sensitive(name):
        return value
    return MASK + value[-4:] if len(value) > 12 else MASK


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


async def rotate_secret(webhook: Webhook) -> str:
    """A new secret signs from now on; the old one also signs, and stays valid, for 24 hours.

    Takes the webhook the caller already looked up in its organisation (services.get_webhook)."""
    secret = signing.generate_secret()
    await Webhook.update(
        {
            Webhook.previous_secret: webhook.secret,
            Webhook.previous_secret_expires_at: datetime.now(UTC) + ROTATION_OVERLAP,
            Webhook.secret: seal_secret(webhook.id, secret),
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
