"""The house rules of the code base, checked from the source: one-way imports, no circles, modules
of a readable size, and development tools kept out of the product (README "Where things live")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("app", "tasks")
CONTROLLER_MODULES = {"api", "pages", "controllers", "web"}
MAX_LINES = 400
DOMAINS = {"accounts", "events", "webhooks", "oauth", "integrations", "portal"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            if "piccolo_migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, name: str) -> set[str]:
    """Every module this one imports, at the top or inside a function (a lazy import is still a tie)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}


def test_no_module_of_the_product_passes_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by meaning: {long}"


def test_the_product_never_imports_development_tools_tests_or_benchmarks():
    for name, path in _modules().items():
        bad = {m for m in _imports(path, name) if m.split(".")[0] in {"devtools", "tests", "bench"}}
        assert not bad, f"{name} imports {bad}"


def test_app_never_imports_the_actors():
    for name, path in _modules().items():
        if name.startswith("app."):
            bad = {m for m in _imports(path, name) if m == "tasks" or m.startswith("tasks.")}
            assert not bad, f"{name} imports {bad}: services send work by actor name (app.core.queue)"


def test_no_domain_imports_another_domains_controllers_and_the_bus_knows_no_subscriber():
    for name, targets in _graph().items():
        parts = name.split(".")
        if parts[0] != "app" or len(parts) < 3:
            continue
        for target in targets:
            other = target.split(".")
            if len(other) >= 3 and other[1] != parts[1] and other[2] in CONTROLLER_MODULES:
                raise AssertionError(f"{name} imports {target}: shared shapes go in that domain's schemas.py")
            if parts[1] == "events" and len(other) >= 2 and other[1] in DOMAINS - {"events", "accounts"}:
                raise AssertionError(f"the event bus ({name}) imports its subscriber {target}")
            if parts[1] == "core" and len(other) >= 2 and other[1] in DOMAINS:
                raise AssertionError(f"shared infrastructure ({name}) imports the domain module {target}")


def test_there_is_no_import_circle():
    graph = _graph()
    assert sum(len(targets) for targets in graph.values()) > 100  # the graph really was read
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
