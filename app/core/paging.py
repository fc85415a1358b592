"""Keyset pagination of API lists (CONTRACT: `{"items": [...], "next_cursor": ...}` with
`?limit=&cursor=`): a cursor is the last row's (time, id), opaque to clients."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime

MAX_LIMIT = 200


class BadQuery(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
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
