from __future__ import annotations

import uuid
from typing import Any

import msgspec


class PublishEvent(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    payload: Any
    aggregate_id: str | None = None
    metadata: Any = None


class PublishedEvent(msgspec.Struct):
    id: uuid.UUID


class EventTypeOut(msgspec.Struct):
    name: str
    domain: str
    category: str
    description: str
    example: dict[str, Any]
    deprecated: bool


class EventTypeList(msgspec.Struct):
    items: list[EventTypeOut]
    next_cursor: str | None = None
