"""Events: the JSON API (publish, catalog) and the catalog page."""

from __future__ import annotations

import json

from litestar import Controller, Request, get, post
from litestar.params import JSONBody
from litestar.response import Template

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.core.problems import Problem
from app.events import schemas, services
from app.events.catalog import load_catalog


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


class EventsApi(Controller):
    tags = ["events"]

    @post(
        "/events",
        opt={"scopes": ["events:write"]},
        status_code=201,
        summary="Publish an event",
        responses=errors(400, 422),
    )
    async def publish(self, request: Request, data: JSONBody[schemas.PublishEvent]) -> schemas.PublishedEvent:
        """Publish an event for the token's organisation. It is stored and fanned out to webhooks."""
        principal = principal_of(request)
        try:
            event_id = await services.publish(
                principal.org_id,
                data.type,
                data.payload,
                aggregate_id=data.aggregate_id,
                metadata=data.metadata,
            )
        except services.EventError as error:
            raise Problem(422, str(error), [{"field": error.field, "message": str(error)}]) from None
        return schemas.PublishedEvent(id=event_id)

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
