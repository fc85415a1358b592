"""Keyset pagination of API lists (CONTRACT: `{"items": [...], "next_cursor": ...}` with
`?limit=&cursor=`): a cursor is the last row's (time, id), opaque to clients."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from app.core.problems import Problem

MAX_LIMIT = 200
T = TypeVar("T")
Position = tuple[datetime, uuid.UUID]  # a row's (time, id): a page starts after it


class BadQuery(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = raw.split("|")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has its offset")
        moment.astimezone(UTC)  # out of range (year 1 east of UTC, say) raises here, not in the driver
        return moment, uuid.UUID(row_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise BadQuery("cursor", "The cursor is not one this API gave out.") from None


def check_limit(limit: int | None, default: int = 50) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery("limit", f"limit is between 1 and {MAX_LIMIT}.")
    return limit


def request_window(limit: int | None, cursor: str | None, default: int) -> tuple[int, Position | None]:
    """An API list's `?limit=&cursor=`: the page size and where to start; a bad one is a 422 naming it."""
    try:
        return check_limit(limit, default), decode_cursor(cursor) if cursor else None
    except BadQuery as bad:
        raise Problem(422, str(bad), [{"field": bad.field, "message": str(bad)}]) from None


def cut(rows: list[T], size: int, key: Callable[[T], Position]) -> tuple[list[T], str | None]:
    """A page of `rows` read with `limit=size + 1`: the first `size`, and the cursor of the next page
    (None on the last one)."""
    if len(rows) <= size:
        return rows, None
    return rows[:size], encode_cursor(*key(rows[size - 1]))
