"""Reading times people and programs type: ISO 8601, with or without a zone.

One rule everywhere (pages, API bodies, bulk-job parameters): a time without a zone is UTC. The
pages' datetime-local fields carry no zone and are labelled UTC, so they read the same way.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """An aware datetime; a naive one is taken as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_time(raw: str | None) -> datetime | None:
    """An ISO 8601 time as an aware datetime, None for an empty value; ValueError when unreadable."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise ValueError("not a time")
    return as_utc(datetime.fromisoformat(raw))


def parse_time_or_none(raw: str | None) -> datetime | None:
    """parse_time for filters in a page, where an unreadable time filters nothing."""
    try:
        return parse_time(raw)
    except ValueError:
        return None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` header (RFC 9110 10.2.3: delay-seconds or an HTTP date) as seconds from now
    (0 for a date in the past); None when it is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(min(int(value), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
