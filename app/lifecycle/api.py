"""The JSON API of the data lifecycle: erasure of an event's payload."""

from __future__ import annotations

ROUTES: list = []
