"""Checking API and form input field by field: each check writes what is wrong into `errors` (field ->
message, shown beside the field in a page and as the problem's `errors` list in the API) and returns
the clean value, or None when there is none."""

from __future__ import annotations

import re
import uuid
from typing import Any

from app.core import problems


class Invalid(ValueError):
    """Input that cannot be saved; `errors` maps each form/API field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def as_uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    """An id from a URL or a body, or None when it is not a UUID (so the caller answers 404 or 422)."""
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None


def text(
    data: dict[str, Any], field: str, errors: dict[str, str], message: str, *, limit: int, required: bool = True
) -> str | None:
    """A text field: a string, within its length, without NUL or other control characters."""
    value = data.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        errors[field] = message
        return None
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value):
        errors[field] = "contains control characters"
        return None
    return value.strip()


def whole_number(data: dict[str, Any], field: str, errors: dict[str, str], low: int, high: int) -> int | None:
    """A whole number within [low, high]; a form's digits (ASCII, at most 15) count as one."""
    value = data.get(field)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,15}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[field] = f"a whole number from {low:,} to {high:,}"
        return None
    return value


def boolean(data: dict[str, Any], field: str, errors: dict[str, str]) -> bool | None:
    value = data.get(field)
    if not isinstance(value, bool):
        errors[field] = "true or false"
        return None
    return value


def unknown(data: dict[str, Any], allowed: set[str], errors: dict[str, str]) -> None:
    for name in sorted(set(data) - allowed):
        errors[name] = "is not a field of this form"


def invalid(what: str, errors: dict[str, str]) -> problems.Problem:
    """The 422 for input with these errors (pages show them beside the fields)."""
    detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
    return problems.Problem(
        422, f"The {what} was not saved: {detail}", [{"field": f, "message": m} for f, m in errors.items()]
    )
