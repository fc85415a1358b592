"""What a webhook may look like: every field of the API's or the form's input checked, with a message
per field that pages show beside the field and the API returns as the problem's `errors`."""

from __future__ import annotations

import json
import re
from typing import Any

from app.core import fields
from app.core.guard import OutboundRefused, check_url
from app.events import services as events
from app.webhooks import delivery_settings, patterns, retry
from app.webhooks.secrets import mask_value, open_headers
from app.webhooks.tables import Webhook

MAX_HEADERS = 20
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
HEADER_VALUE_RE = re.compile(r"^[\x20-\x7e\t]{0,2000}$")
# Headers we set ourselves (or that HTTP owns): a custom header may not replace them.
RESERVED_HEADERS = {"host", "content-type", "content-length", "user-agent", "connection", "transfer-encoding"}
RESERVED_PREFIXES = ("x-intime-", "webhook-")
FIELDS = {
    "name",
    "url",
    "description",
    "event_patterns",
    "enabled",
    "timeout_seconds",
    "headers",
    "retry_policy",
    "max_in_flight",
    "rate_limit_per_second",
}


class WebhookInvalid(fields.Invalid):
    """A webhook that cannot be saved."""


async def catalog_domains() -> dict[str, str]:
    return {name: row["domain"] for name, row in (await events.known_types()).items()}


def _check_headers(raw: Any, errors: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """Custom headers; a value sent back exactly as we showed it masked keeps the stored value."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors["headers"] = "must be an object of header names to values"
        return {}
    if len(raw) > MAX_HEADERS:
        errors["headers"] = f"at most {MAX_HEADERS} custom headers"
    headers: dict[str, str] = {}
    for name, value in raw.items():
        lowered = str(name).lower()
        if not HEADER_NAME_RE.match(str(name)):
            errors["headers"] = f"{name!r} is not a valid header name"
        elif lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES):
            errors["headers"] = f"{name} is set by InTime and cannot be overridden"
        elif isinstance(value, str) and name in current and value == mask_value(name, current[name]):
            headers[str(name)] = current[name]  # sent back as we showed it: keep the stored value
        elif not isinstance(value, str) or not HEADER_VALUE_RE.match(value):
            errors["headers"] = (
                f"the value of {name} must be printable ASCII text of at most 2000 characters on one line"
            )
        else:
            headers[str(name)] = value
    return headers


def _check_limits(data: dict[str, Any], out: dict[str, Any], errors: dict[str, str]) -> None:
    """The webhook's cap in flight and rate limit; null (a blank form field) returns each to its
    default: the organisation's cap, no rate limit."""
    for field, check in (
        ("max_in_flight", delivery_settings.check_cap),
        ("rate_limit_per_second", delivery_settings.check_rate),
    ):
        if field in data:
            value = None if data[field] is None else check(data[field], field, errors)
            if field not in errors:
                out[field] = value


async def validate(data: dict[str, Any], *, partial: bool = False, current_webhook: Webhook | None = None) -> dict:
    """Check API or form input; return the columns to write. With `partial`, absent fields stay."""
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}

    def present(field: str) -> bool:
        return field in data or not partial

    if present("name"):
        name = fields.text(data, "name", errors, "Give the webhook a name of 1-100 characters.", limit=100)
        if name is not None:
            out["name"] = name
    if present("url"):
        url = fields.text(data, "url", errors, "Enter the URL that should receive the events.", limit=4096)
        if url is not None:
            try:
                out["url"] = await check_url(url)
            except OutboundRefused as refused:
                errors["url"] = str(refused)
    if "description" in data:
        description = fields.text(data, "description", errors, "At most 2000 characters.", limit=2000, required=False)
        if description is not None:
            out["description"] = description
    if present("event_patterns"):
        raw = data.get("event_patterns")
        if isinstance(raw, str):
            raw = [part for part in re.split(r"[\s,]+", raw) if part]
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            errors["event_patterns"] = "A list of event types or patterns, e.g. job.created, job.*, recruiting.*, *."
        else:
            try:
                out["event_patterns"] = patterns.validate_patterns(raw, await catalog_domains())
            except patterns.PatternError as error:
                errors["event_patterns"] = str(error)[0].upper() + str(error)[1:] + "."
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            errors["enabled"] = "true or false"
        else:
            out["enabled"] = data["enabled"]
    if "timeout_seconds" in data:
        timeout = data["timeout_seconds"]
        if isinstance(timeout, str) and timeout.strip().isdigit():
            timeout = int(timeout)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 60:
            errors["timeout_seconds"] = "A whole number of seconds from 1 to 60."
        else:
            out["timeout_seconds"] = timeout
    if "headers" in data:
        current = open_headers(current_webhook.id, current_webhook.headers) if current_webhook else {}
        out["headers"] = _check_headers(data["headers"], errors, current)
    if "retry_policy" in data:
        if data["retry_policy"] is None:
            out["retry_policy"] = None
        else:
            try:
                out["retry_policy"] = json.dumps(retry.parse_policy(data["retry_policy"]).as_dict())
            except retry.PolicyError as error:
                for field, message in error.errors.items():
                    errors[f"retry_policy.{field}"] = message
    _check_limits(data, out, errors)
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        errors[unknown[0]] = f"Unknown field {', '.join(unknown)}."
    if errors:
        raise WebhookInvalid(errors)
    return out
