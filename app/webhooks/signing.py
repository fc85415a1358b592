"""Secrets and signatures (CONTRACT "A webhook request").

Two signatures ride on every request: our own `X-InTime-Signature` (hex HMAC-SHA256 of the raw body,
keyed by the secret string, newest secret only) and the Standard Webhooks `webhook-signature`
(base64 HMAC-SHA256 of `id.timestamp.body`, keyed by the secret's decoded bytes), which during a
rotation carries one signature per live secret, so receivers can switch secrets without a gap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import datetime

SECRET_PREFIX = "whsec_"  # noqa: S105  (the format marker, not a secret)


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def _key_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def intime_signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_signature(message_id: str, timestamp: int, body: bytes, secret: str) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    delivery_id: str, event_type: str, body: bytes, secrets: list[str], now: datetime
) -> dict[str, str]:
    """`secrets` newest first; every one of them signs the Standard Webhooks header."""
    timestamp = int(now.timestamp())
    return {
        "X-InTime-Event": event_type,
        "X-InTime-Delivery": delivery_id,
        "X-InTime-Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "X-InTime-Signature": intime_signature(body, secrets[0]),
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(standard_signature(delivery_id, timestamp, body, s) for s in secrets),
    }


def mask(secret: str) -> str:
    return SECRET_PREFIX + "…" + secret[-4:]
