"""The webhooks part of the JSON API (CONTRACT "JSON API"): webhooks, deliveries, retry config, DLQ, jobs."""

from app.webhooks.api.deliveries import DeliveriesApi
from app.webhooks.api.dlq import DlqApi, JobsApi
from app.webhooks.api.settings import DeliverySettingsApi
from app.webhooks.api.webhooks import RetryConfigApi, WebhooksApi

ROUTES = [WebhooksApi, DeliveriesApi, RetryConfigApi, DeliverySettingsApi, DlqApi, JobsApi]
