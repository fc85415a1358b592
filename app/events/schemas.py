from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar.openapi.spec import OpenAPIType, Schema

from app.core.apidoc import FieldError
from app.events.validation import MAX_KEY_LENGTH

MAX_BATCH = 500


class PublishEvent(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    payload: Any
    aggregate_id: str | None = None
    metadata: Any = None


class BatchEvent(msgspec.Struct, forbid_unknown_fields=True):
    """One event of a batch: a single event's fields, and its own optional idempotency key."""

    type: str
    payload: Any
    aggregate_id: str | None = None
    metadata: Any = None
    idempotency_key: str | None = None


# The batch's items are decoded one by one (BatchEvent), so that one bad item is refused with its index
# and the others are published; the document still shows what an item is.
_BATCH_ITEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["type", "payload"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, description="A type from GET /event-types, e.g. job.created"),
        "payload": Schema(type=OpenAPIType.OBJECT, description="The event's data, a JSON object"),
        "aggregate_id": Schema(type=[OpenAPIType.STRING, OpenAPIType.NULL], format="uuid"),  # type: ignore[arg-type]
        "metadata": Schema(type=[OpenAPIType.OBJECT, OpenAPIType.NULL]),
        "idempotency_key": Schema(
            type=[OpenAPIType.STRING, OpenAPIType.NULL],
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            description="As the Idempotency-Key header of POST /events, for this item",
        ),
    },
)


class PublishBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[
        list[Any],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_BATCH,
            extra_json_schema={"description": f"1-{MAX_BATCH} events", "extra": {"items": _BATCH_ITEM_SCHEMA}},
        ),
    ]


class PublishedEvent(msgspec.Struct):
    id: uuid.UUID


class BatchItemResult(msgspec.Struct, omit_defaults=True):
    """201: published (`id`); 200: its idempotency key's first event (`id`, nothing created);
    409: the key was used for a different request; 422: not valid (`detail`, `errors`)."""

    index: int
    status: int
    id: uuid.UUID | None = None
    detail: str | None = None
    errors: list[FieldError] | None = None


class BatchResult(msgspec.Struct):
    items: list[BatchItemResult]
    published: int
    replayed: int
    failed: int


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
