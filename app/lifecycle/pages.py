"""The retention page: what the organisation keeps, for how long, and when pruning last ran."""

from __future__ import annotations

ROUTES: list = []
