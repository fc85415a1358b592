"""Events: the JSON API (publish, catalog) and the catalog page."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, JSONBody
from litestar.response import Template

from app.accounts.auth import charge, principal_of
from app.core.apidoc import FieldError, errors
from app.core.problems import Problem
from app.events import schemas, services, validation
from app.events.catalog import load_catalog
from app.events.ingest import Outcome
from app.events.validation import MAX_KEY_LENGTH, EventIn


async def _check_item(raw: Any) -> EventIn | services.EventError:
    """One batch item, decoded and checked on its own: the event, or what is wrong with it."""
    try:
        item = msgspec.convert(raw, schemas.BatchEvent)
    except msgspec.ValidationError as error:
        message, _, path = str(error).partition(" - at `$")
        named = re.search(r"field `(\w+)`", message)
        field = path.rstrip("`").lstrip(".") or (named.group(1) if named else "")
        return services.EventError(message, field)
    try:
        return await validation.check(
            item.type,
            item.payload,
            aggregate_id=item.aggregate_id,
            metadata=item.metadata,
            key=item.idempotency_key,
            key_field="idempotency_key",
        )
    except services.EventError as error:
        return error


def _item_result(index: int, outcome: Outcome) -> schemas.BatchItemResult:
    if outcome.error is not None:
        field = f"events[{index}].{outcome.error.field}".rstrip(".")
        return schemas.BatchItemResult(
            index=index,
            status=outcome.error.status,
            detail=str(outcome.error),
            errors=[FieldError(field=field, message=str(outcome.error))],
        )
    return schemas.BatchItemResult(index=index, status=200 if outcome.replayed else 201, id=outcome.event_id)


def _batch_result(outcomes: list[Outcome]) -> schemas.BatchResult:
    items = [_item_result(index, outcome) for index, outcome in enumerate(outcomes)]
    return schemas.BatchResult(
        items=items,
        published=sum(item.status == 201 for item in items),
        replayed=sum(item.status == 200 for item in items),
        failed=sum(item.status >= 400 for item in items),
    )


def _event_type_out(row: dict) -> schemas.EventTypeOut:
    example = row["example"]
    return schemas.EventTypeOut(
        name=row["name"],
        domain=row["domain"],
        category=row["category"],
        description=row["description"],
        example=json.loads(example) if isinstance(example, str) else example,
        deprecated=row["deprecated"],
    )


REPLAY = ResponseSpec(
    data_container=schemas.PublishedEvent,
    description="The Idempotency-Key was used within its lifetime for the same request: the first event's id; "
    "nothing is created (header `Idempotent-Replayed: true`).",
)
IDEMPOTENCY_KEY = HeaderParameter(
    name="Idempotency-Key",
    required=False,
    description=f"1-{MAX_KEY_LENGTH} characters, unique per event within the organisation (a UUID will do). "
    "The same key with the same body within INTIME_IDEMPOTENCY_TTL_HOURS (24 h) answers 200 with the first "
    "event's id and creates nothing; with a different body, 409.",
)


def _problem(error: services.EventError) -> Problem:
    return Problem(error.status, str(error), [{"field": error.field, "message": str(error)}])


class EventsApi(Controller):
    tags = ["events"]

    @post(
        "/events",
        opt={"scopes": ["events:write"]},
        status_code=201,
        summary="Publish an event",
        responses={200: REPLAY, **errors(400, 409, 422)},
    )
    async def publish(
        self,
        request: Request,
        data: JSONBody[schemas.PublishEvent],
        idempotency_key: Annotated[str | None, IDEMPOTENCY_KEY] = None,
    ) -> Response[schemas.PublishedEvent]:
        """Publish an event for the token's organisation. It is stored and fanned out to webhooks."""
        principal = principal_of(request)
        try:
            outcome = await services.publish_one(
                principal.org_id,
                data.type,
                data.payload,
                aggregate_id=data.aggregate_id,
                metadata=data.metadata,
                idempotency_key=idempotency_key,
            )
        except services.EventError as error:
            raise _problem(error) from None
        assert outcome.event_id is not None
        if outcome.replayed:
            return Response(
                schemas.PublishedEvent(id=outcome.event_id), status_code=200, headers={"Idempotent-Replayed": "true"}
            )
        return Response(schemas.PublishedEvent(id=outcome.event_id), status_code=201)

    @post(
        "/events/batch",
        opt={"scopes": ["events:write"]},
        status_code=200,
        summary="Publish up to 500 events in one transaction",
        responses=errors(400, 422),
    )
    async def publish_batch(self, request: Request, data: JSONBody[schemas.PublishBatch]) -> schemas.BatchResult:
        """Each event is checked on its own: the valid ones are published together in one transaction,
        the others are answered by their index with the error (the batch is not refused for them).
        Each event counts as one request toward the token's hourly limit; a batch that would pass the
        limit is refused whole (429) and publishes nothing."""
        principal = principal_of(request)
        if len(data.events) > 1:
            await charge(request, len(data.events) - 1)  # the guard counted the request itself
        items = [await _check_item(raw) for raw in data.events]
        try:
            outcomes = await services.publish_batch(principal.org_id, items)
        except services.EventError as error:
            raise _problem(error) from None
        return _batch_result(outcomes)

    @get("/event-types", summary="The event-type catalog", responses=errors(scoped=False))
    async def event_types(self) -> schemas.EventTypeList:
        """Every event type the platform emits, with its domain and an example payload. Any valid token."""
        rows = await services.list_event_types()
        return schemas.EventTypeList(items=[_event_type_out(row) for row in rows])


class CatalogPage(Controller):
    include_in_schema = False

    @get("/event-types", name="events:catalog")
    async def catalog(self) -> Template:
        rows = [_event_type_out(row) for row in await services.list_event_types()]
        by_domain: dict[str, list] = {}
        for row in rows:
            by_domain.setdefault(row.domain, []).append(row)
        return Template(
            "events/catalog.html",
            context={"by_domain": by_domain, "domains": load_catalog().domains},
        )
