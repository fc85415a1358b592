"""One delivery in the JSON API: every attempt's request and response, and replay."""

from __future__ import annotations

import uuid

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.webhooks import (
    operations,
    queries,
    schemas,
)
from app.webhooks.api.common import ONE, READ, WRITE, operation, out


class DeliveriesApi(Controller):
    path = "/deliveries"
    tags = ["deliveries"]

    @get(
        "/{delivery_id:uuid}",
        opt=READ,
        summary="A delivery with every attempt's request and response",
        responses=ONE,
    )
    async def get_one(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> schemas.DeliveryDetail:
        found = await queries.get_delivery(principal_of(request).org_id, delivery_id)
        if found is None:
            raise NotFoundException("No such delivery in this organisation.")
        attempts = [out(schemas.AttemptOut, attempt) for attempt in found["attempts"]]
        return out(schemas.DeliveryDetail, found, attempts=attempts)

    @post(
        "/{delivery_id:uuid}/replay",
        opt=WRITE,
        status_code=202,
        summary="Send it again (same delivery id)",
        responses=errors(400, 404, 409),
    )
    async def replay(self, request: Request, delivery_id: FromPath[uuid.UUID]) -> schemas.Replayed:
        await operation(operations.replay(principal_of(request).org_id, delivery_id))
        return schemas.Replayed(delivery_id=delivery_id, status="pending")
