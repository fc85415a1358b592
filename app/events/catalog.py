"""The event-type catalog: read from catalog.toml, checked, and synced into the event_types table."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.events.known import KNOWN_TYPES
from app.events.tables import EventType

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class EventTypeSpec:
    name: str
    domain: str
    description: str
    example: dict[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class Catalog:
    domains: dict[str, str]
    types: tuple[EventTypeSpec, ...]

    def names(self) -> set[str]:
        return {spec.name for spec in self.types}


def parse_catalog(text: str) -> Catalog:
    data = tomllib.loads(text)
    domains = data.get("domains") or {}
    seen: set[str] = set()
    specs = []
    for index, item in enumerate(data.get("types") or []):
        name = item.get("name", "")
        where = f"type #{index + 1} ({name or 'unnamed'})"
        if not NAME_RE.match(name):
            raise CatalogError(f"{where}: a name is dotted lower-case words, e.g. job.created")
        if name in seen:
            raise CatalogError(f"{where}: listed twice")
        if item.get("domain") not in domains:
            raise CatalogError(f"{where}: domain {item.get('domain')!r} is not one of {sorted(domains)}")
        if not str(item.get("description", "")).strip():
            raise CatalogError(f"{where}: needs a description")
        seen.add(name)
        specs.append(EventTypeSpec(name, item["domain"], item["description"].strip(), item.get("example", {})))
    if not specs:
        raise CatalogError("the catalog lists no event types")
    return Catalog(domains=domains, types=tuple(specs))


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    return parse_catalog(CATALOG_FILE.read_text())


async def sync_catalog(catalog: Catalog | None = None) -> dict[str, int]:
    """Upsert every type; mark the ones no longer listed deprecated (events may still name them)."""
    catalog = catalog or load_catalog()
    for spec in catalog.types:
        await EventType.raw(
            "INSERT INTO event_types (name, domain, category, description, example, deprecated) "
            "VALUES ({}, {}, {}, {}, {}::jsonb, false) "
            "ON CONFLICT (name) DO UPDATE SET domain = excluded.domain, category = excluded.category, "
            "description = excluded.description, example = excluded.example, deprecated = false",
            spec.name,
            spec.domain,
            spec.category,
            spec.description,
            json.dumps(spec.example),
        )
    retired = await EventType.raw(
        "UPDATE event_types SET deprecated = true WHERE NOT deprecated AND NOT (name = ANY({})) RETURNING name",
        sorted(catalog.names()),
    )
    KNOWN_TYPES.forget()
    return {"types": len(catalog.types), "deprecated": len(retired)}
