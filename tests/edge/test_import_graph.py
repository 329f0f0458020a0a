"""The layout shows the architecture: no import cycle between modules (type-only
imports included), and nothing imports upward (the broker never imports Django, the
client or the edge; the wire package imports none of them)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "django_ws_proto": ROOT / "proto" / "django_ws_proto",
    "django_ws_client": ROOT / "django_ws_client",
    "django_ws_edge": ROOT / "services" / "edge" / "django_ws_edge",
    "django_ws_broker": ROOT / "services" / "broker" / "django_ws_broker",
}


def module_files() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, wherever the import stands."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> our modules it imports, module -> every name it imports)."""
    files = module_files()
    everything = {module: imported_names(path) for module, path in files.items()}
    ours = {
        module: {n for n in names if n in files and n != module}
        for module, names in everything.items()
    }
    return ours, everything


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph, _ = import_graph()
    edges = sum(len(targets) for targets in graph.values())
    print(f"\n{len(graph)} modules, {edges} imports between them, cycles: {cycles(graph)}")
    assert cycles(graph) == []
    # The edge's layer knows connections only through a protocol.
    assert "django_ws_edge.connection" not in graph["django_ws_edge.layer"]


def test_nothing_imports_upward() -> None:
    _, everything = import_graph()
    for module, names in everything.items():
        roots = {name.split(".")[0] for name in names}
        if module.startswith("django_ws_broker"):
            assert not roots & {"django", "django_ws_client", "django_ws_edge"}, module
        if module.startswith("django_ws_proto"):
            assert not roots & {
                "django",
                "django_ws_client",
                "django_ws_edge",
                "django_ws_broker",
            }, module
