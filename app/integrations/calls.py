"""Calling an integration in the background: this is how the rest of the platform calls a provider.

`enqueue_call` hands the call to the workers (tasks.integrations.call_provider), which make it with
`services.call_integration`. A call over the provider's rate limit is deferred and sent again when a
token is due (waiting is not failing); a failing call is retried with backoff. The call id travels with every
attempt as the `Idempotency-Key` header, so a provider that honours it does the work once even when
the same call reaches it twice (the queue delivers at least once).
"""

from __future__ import annotations

import uuid
from typing import Any

from app.core import queue
from app.integrations import services


async def enqueue_call(
    integration_id: uuid.UUID, operation: str, payload: dict[str, Any], *, call_id: str | None = None
) -> str:
    """Enqueue `POST <endpoint>/<operation>` with `payload` to the integration's active provider; returns
    the call id. Pass your own `call_id` when the same call may be enqueued twice (a redelivered event,
    say): the provider then sees one key for both."""
    # Refused here, the caller learns of it now, not from a worker's log.
    services.check_operation(operation)
    call_id = services.check_call_id(call_id) if call_id is not None else str(uuid.uuid4())
    await queue.asend("call_provider", str(integration_id), operation, payload, call_id)
    return call_id
