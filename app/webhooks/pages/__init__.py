"""The webhook pages, one module per screen; app/main.py mounts ROUTES."""

from __future__ import annotations

from app.webhooks.pages.debugger import DebuggerPages
from app.webhooks.pages.deliveries import DeliveryPages
from app.webhooks.pages.dlq import DlqPages
from app.webhooks.pages.jobs import JobPages
from app.webhooks.pages.retry_config import RetryConfigPage
from app.webhooks.pages.webhooks import WebhookPages

ROUTES = [WebhookPages, DebuggerPages, DeliveryPages, RetryConfigPage, DlqPages, JobPages]
