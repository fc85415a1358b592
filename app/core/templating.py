"""Jinja set-up: the templates folder, filters for times, and the helpers every page uses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import pass_context
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from app.core.settings import PACKAGE_DIR

# The portal's sections, in the order of the navigation (route name, label). A section whose route
# does not exist yet is shown, greyed out and unlinked, rather than linked to a 404.
NAVIGATION: list[tuple[str, str]] = [
    ("portal:index", "Overview"),
    ("webhooks:list", "Webhooks"),
    ("retry:config", "Retry config"),
    ("dlq:list", "Dead-letter queue"),
    ("oauth:panel", "OAuth"),
    ("integrations:list", "Integrations"),
    ("events:catalog", "Event catalog"),
    ("tokens:list", "API tokens"),
    ("lifecycle:retention", "Retention"),
]


def timeago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{seconds // size} {unit}"
            break
    else:
        text = f"{seconds} s"
    return f"in {text}" if future else f"{text} ago"


def isotime(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def pretty_json(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


@pass_context
def navigation(context: Any) -> list[dict[str, Any]]:
    request = context["request"]
    current = request.url.path
    items = []
    for name, label in NAVIGATION:
        if request.app.get_handler_index_by_name(name) is None:
            items.append({"href": None, "label": label, "active": False})
            continue
        href = request.app.route_reverse(name)
        base = href.rstrip("/")
        active = current in (href, base) or (name != "portal:index" and current.startswith(base + "/"))
        items.append({"href": href, "label": label, "active": active})
    return items


def _configure(engine: JinjaTemplateEngine) -> None:
    env = engine.engine
    env.filters.update(timeago=timeago, isotime=isotime, pretty_json=pretty_json)
    env.globals.update(navigation=navigation)
    env.trim_blocks = True
    env.lstrip_blocks = True


template_config = TemplateConfig(
    directory=PACKAGE_DIR / "templates", engine=JinjaTemplateEngine, engine_callback=_configure
)
