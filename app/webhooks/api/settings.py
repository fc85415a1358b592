"""The organisation's delivery rules in the JSON API: what counts towards auto-disable."""

from __future__ import annotations

from litestar import Controller, Request, get, put
from litestar.params import JSONBody

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.webhooks import delivery_settings, schemas
from app.webhooks.api.common import CHECKED, READ, WRITE
from app.webhooks.dlq import AUTO_DISABLE_AFTER, FAILING_WARNINGS


def _out(rules: delivery_settings.DeliveryRules) -> schemas.DeliverySettingsOut:
    return schemas.DeliverySettingsOut(rules.count_payload_rejections, AUTO_DISABLE_AFTER, list(FAILING_WARNINGS))


class DeliverySettingsApi(Controller):
    path = "/delivery-settings"
    tags = ["retry"]

    @get("/", opt=READ, summary="What counts towards auto-disable", responses=errors())
    async def get_settings(self, request: Request) -> schemas.DeliverySettingsOut:
        return _out(await delivery_settings.rules(principal_of(request).org_id))

    @put("/", opt=WRITE, summary="Change the organisation's delivery rules", responses=CHECKED)
    async def put_settings(
        self, request: Request, data: JSONBody[schemas.DeliverySettingsIn]
    ) -> schemas.DeliverySettingsOut:
        rules = delivery_settings.DeliveryRules(count_payload_rejections=data.count_payload_rejections)
        return _out(await delivery_settings.set_rules(principal_of(request).org_id, rules))
