"""The JSON API of the data lifecycle: erasure of an event's payload."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
from litestar import Controller, Request, delete
from litestar.params import FromPath

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.core.fields import as_uuid
from app.core.problems import NotFound
from app.lifecycle import erase


class PayloadErased(msgspec.Struct):
    event_id: uuid.UUID
    erased_at: datetime
    """When the payload was erased (the first time, if it was erased before)."""
    attempts_cleared: int
    """Attempts whose response body this request removed (0 when erased before)."""
    deliveries_stopped: int
    """Deliveries still waiting to be sent that went to the DLQ (`payload_erased`) instead."""
    erasure_id: uuid.UUID
    """The audit record of this request."""


class ErasureApi(Controller):
    tags = ["events"]

    @delete(
        "/events/{event_id:str}/payload",
        opt={"scopes": ["events:write"]},
        status_code=200,
        summary="Erase an event's payload (GDPR)",
        responses=errors(400, 404),
    )
    async def erase_payload(self, request: Request, event_id: FromPath[str]) -> PayloadErased:
        """Remove the event's payload and metadata, and the response body of every attempt of every
        delivery of it; ids, types, statuses and timings stay, so the debugger still shows that it was
        sent. Deliveries still waiting are not sent (they go to the DLQ), and none can be replayed.
        Erasing again is harmless and answers the same. Audited."""
        key = as_uuid(event_id)
        if key is None:
            raise NotFound("No such event in this organisation.")
        principal = principal_of(request)
        done = await erase.erase(principal.org_id, event_id=key, actor=principal.actor)
        assert done.erased_at is not None
        return PayloadErased(
            event_id=key,
            erased_at=done.erased_at,
            attempts_cleared=done.attempts,
            deliveries_stopped=done.deliveries_stopped,
            erasure_id=done.id,
        )


ROUTES: list = [ErasureApi]
