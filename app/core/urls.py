"""URL helpers shared by pages."""

from __future__ import annotations


def local_path(target: str | None, fallback: str) -> str:
    """`target` if it is a path on this site, else `fallback`: `//evil.example` or `https://...` from a
    form field or query parameter would make us an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback
