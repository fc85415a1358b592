"""What makes an event publishable, checked before the SQL so that the caller gets a field-level
message: a known type, a JSON object payload (and metadata) of bounded size, a UUID aggregate id and,
when given, an idempotency key. publish_event() checks the type and shapes again: it is the rule for
host code too, this is the explanation for API callers."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from app.events.known import KNOWN_TYPES

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_KEY_LENGTH = 255

JSON_KINDS = {
    type(None): "null",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}
_ENCODER = msgspec.json.Encoder(order="sorted")


class EventError(ValueError):
    """An event that cannot be published; `status` is the HTTP status an API caller gets."""

    status = 422

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class KeyConflict(EventError):
    """The idempotency key was used within its lifetime for a different request."""

    status = 409


@dataclass(frozen=True)
class EventIn:
    """A checked event: JSON already encoded (keys sorted, so equal objects hash equally)."""

    type: str
    payload: str
    metadata: str
    aggregate_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    key: str | None = None

    @property
    def request_hash(self) -> bytes:
        """What a replay of the same key must match: the whole request, not only its key."""
        parts = (self.type, str(self.aggregate_id or ""), self.payload, self.metadata)
        return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _json_object(value: Any, field: str) -> str:
    if not isinstance(value, dict):
        kind = JSON_KINDS.get(type(value), type(value).__name__)
        raise EventError(f"{field} must be a JSON object, not {kind}.", field)
    text = _ENCODER.encode(value).decode()
    if "\\u0000" in text:  # jsonb refuses the NUL character
        raise EventError(f"{field} holds a NUL character (\\u0000), which cannot be stored.", field)
    return text


def check_key(key: Any, field: str = "Idempotency-Key") -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise EventError(f"{field} must be 1-{MAX_KEY_LENGTH} printable characters, e.g. a UUID.", field)
    return key


def _aggregate_id(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise EventError(f"aggregate_id {value!r} is not a UUID.", "aggregate_id") from None


async def check(
    event_type: Any,
    payload: Any,
    *,
    aggregate_id: Any = None,
    metadata: Any = None,
    user_id: uuid.UUID | None = None,
    key: Any = None,
    key_field: str = "Idempotency-Key",
) -> EventIn:
    """The event as publish_event() takes it, or EventError naming the first field that is wrong."""
    if not isinstance(event_type, str) or not event_type:
        raise EventError("type is required, e.g. job.created.", "type")
    if not await KNOWN_TYPES.contains(event_type):
        raise EventError(f"Unknown event type {event_type!r}; GET /api/v1/event-types lists the catalog.", "type")
    body = _json_object(payload, "payload")
    if len(body) > MAX_PAYLOAD_BYTES:
        raise EventError(f"payload is larger than {MAX_PAYLOAD_BYTES // 1024} KiB.", "payload")
    return EventIn(
        type=event_type,
        payload=body,
        metadata=_json_object(metadata if metadata is not None else {}, "metadata"),
        aggregate_id=_aggregate_id(aggregate_id),
        user_id=user_id,
        key=check_key(key, key_field),
    )
