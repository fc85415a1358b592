"""The organisation's delivery rules in the JSON API: what counts towards auto-disable."""

from __future__ import annotations

import msgspec
from litestar import Controller, Request, get, put
from litestar.params import JSONBody

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.webhooks import delivery_settings
from app.webhooks.api.common import CHECKED, READ, WRITE
from app.webhooks.dlq import AUTO_DISABLE_AFTER, FAILING_WARNINGS


class DeliverySettingsOut(msgspec.Struct):
    count_payload_rejections: bool
    """Whether a refusal of one payload (a non-retryable 4xx other than 401, 403, 404, 405 and 410,
    which always count) counts towards auto-disable."""
    auto_disable_after: int
    """Failed deliveries in a row (not attempts; test sends never count) that disable a webhook."""
    warnings_at: list[int]
    """Failed deliveries in a row at which a webhook.failing event warns."""


class DeliverySettingsIn(msgspec.Struct, forbid_unknown_fields=True):
    count_payload_rejections: bool


def _out(rules: delivery_settings.DeliveryRules) -> DeliverySettingsOut:
    return DeliverySettingsOut(rules.count_payload_rejections, AUTO_DISABLE_AFTER, list(FAILING_WARNINGS))


class DeliverySettingsApi(Controller):
    path = "/delivery-settings"
    tags = ["retry"]

    @get("/", opt=READ, summary="What counts towards auto-disable", responses=errors())
    async def get_settings(self, request: Request) -> DeliverySettingsOut:
        return _out(await delivery_settings.rules(principal_of(request).org_id))

    @put("/", opt=WRITE, summary="Change the organisation's delivery rules", responses=CHECKED)
    async def put_settings(self, request: Request, data: JSONBody[DeliverySettingsIn]) -> DeliverySettingsOut:
        rules = delivery_settings.DeliveryRules(count_payload_rejections=data.count_payload_rejections)
        return _out(await delivery_settings.set_rules(principal_of(request).org_id, rules))
