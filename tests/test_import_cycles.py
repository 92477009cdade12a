"""No import cycles among the apps' modules, lazy (function-level) imports included.

A cycle means two modules cannot be read, or loaded, one without the other; a
lazy import that breaks it at load time only hides an orchestrator in the wrong
place. The graph is read from the source with ast, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "conduit", "domains", "ingress", "notifications", "policies", "webhooks")


def _modules() -> dict[str, Path]:
    modules = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*kept, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Each module of the apps and the modules of the apps it imports."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imported_names(name, path):
            # `from webhooks import delivery` imports webhooks.delivery;
            # `from webhooks.models import Webhook` imports webhooks.models.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_it_finds_a_cycle_when_there_is_one():
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert cycles(graph) == [["a.x", "a.y", "a.z"]]


def test_it_reads_the_imports_of_the_apps():
    graph = import_graph()
    assert "webhooks.models" in graph["webhooks.delivery"]
    assert "webhooks.delivery" in graph["webhooks.tasks"]


def test_the_apps_have_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_ingress_reaches_webhooks_only_through_accept():
    graph = import_graph()
    strays = {
        # `from webhooks import accept` also names the package, which holds nothing.
        module: sorted(
            t
            for t in targets
            if t.startswith("webhooks") and t not in {"webhooks", "webhooks.accept"}
        )
        for module, targets in graph.items()
        if module.startswith("ingress")
    }
    assert {m: t for m, t in strays.items() if t} == {}
