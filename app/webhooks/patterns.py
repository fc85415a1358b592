"""Subscription patterns: `job.created` (one type), `job.*` (a category, any depth below it),
`recruiting.*` (a domain of the catalog), `*` (everything)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

PATTERN_RE = re.compile(r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")
MAX_PATTERNS = 50


class PatternError(ValueError):
    pass


def matches(pattern: str, event_type: str, domain: str | None) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-2]
        return event_type.startswith(prefix + ".") or domain == prefix
    return pattern == event_type


def matches_any(patterns: Iterable[str], event_type: str, domain: str | None) -> bool:
    return any(matches(pattern, event_type, domain) for pattern in patterns)


def validate_patterns(raw: Iterable[str], catalog: Mapping[str, str]) -> list[str]:
    """`catalog` maps each known type to its domain. A pattern that matches no known type is refused:
    it is almost always a typo, and it would silently deliver nothing."""
    patterns = []
    for item in raw:
        pattern = item.strip()
        if not pattern or pattern in patterns:
            continue
        if not PATTERN_RE.match(pattern):
            raise PatternError(
                f"{pattern!r} is not a pattern: use a type (job.created), a category or domain with .* "
                "(job.*, recruiting.*), or * for everything"
            )
        if not any(matches(pattern, name, domain) for name, domain in catalog.items()):
            raise PatternError(f"{pattern!r} matches no event type in the catalog")
        patterns.append(pattern)
    if not patterns:
        raise PatternError("subscribe to at least one event type or pattern")
    if len(patterns) > MAX_PATTERNS:
        raise PatternError(f"at most {MAX_PATTERNS} patterns")
    return patterns


def matching_types(patterns: Iterable[str], catalog: Mapping[str, str]) -> list[str]:
    patterns = list(patterns)
    return sorted(name for name, domain in catalog.items() if matches_any(patterns, name, domain))
