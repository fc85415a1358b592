"""The organisation's delivery rules in the JSON API: what counts towards auto-disable, and the
default cap on deliveries of one webhook in flight at once."""

from __future__ import annotations

from litestar import Controller, Request, get, put
from litestar.params import JSONBody

from app.accounts.auth import principal_of
from app.core.apidoc import errors
from app.core.problems import Problem
from app.webhooks import delivery_settings, schemas
from app.webhooks.api.common import CHECKED, READ, WRITE, sent_fields
from app.webhooks.dlq import AUTO_DISABLE_AFTER, FAILING_WARNINGS


def _out(rules: delivery_settings.DeliveryRules) -> schemas.DeliverySettingsOut:
    return schemas.DeliverySettingsOut(
        count_payload_rejections=rules.count_payload_rejections,
        max_in_flight=rules.max_in_flight,
        auto_disable_after=AUTO_DISABLE_AFTER,
        warnings_at=list(FAILING_WARNINGS),
    )


class DeliverySettingsApi(Controller):
    path = "/delivery-settings"
    tags = ["retry"]

    @get("/", opt=READ, summary="What counts towards auto-disable, and the default cap in flight", responses=errors())
    async def get_settings(self, request: Request) -> schemas.DeliverySettingsOut:
        return _out(await delivery_settings.rules(principal_of(request).org_id))

    @put("/", opt=WRITE, summary="Change the organisation's delivery rules (fields left out stay)", responses=CHECKED)
    async def put_settings(
        self, request: Request, data: JSONBody[schemas.DeliverySettingsIn]
    ) -> schemas.DeliverySettingsOut:
        org_id = principal_of(request).org_id
        try:
            rules = delivery_settings.parse_rules(await sent_fields(request), await delivery_settings.rules(org_id))
        except delivery_settings.RulesInvalid as error:
            raise Problem(
                422,
                f"The delivery settings are not valid: {error}",
                [{"field": f, "message": m} for f, m in error.errors.items()],
            ) from None
        return _out(await delivery_settings.set_rules(org_id, rules))
