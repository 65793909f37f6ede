"""The import rule of docs/ARCHITECTURE.md, checked on the source: layers import downwards only,
and no import circle joins files of different folders.

Every import counts, including those inside functions (a lazy import is still a dependency);
only ``if TYPE_CHECKING:`` blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "coldbrew"

CORE_MODULES = {"errors", "ids", "settings", "core", "__init__"}
"""Top-level modules and folders every layer may import (plain types, errors, settings)."""

LAYERS: dict[str, set[str]] = {
    # folder: the folders it may import (besides itself and the core)
    "registry": set(),
    "store": set(),
    "cache": set(),
    "cluster": set(),
    "runtime": {"store", "cache"},
    "observe": {"registry"},
    "security": {"registry", "store", "runtime"},
    "backends": {"runtime", "security", "store"},
    "batching": {"runtime"},
    "scaling": {"backends", "batching", "runtime"},
    "deploy": {"backends", "registry", "runtime", "scaling", "security", "store"},
    "dataplane": {"scaling", "security", "cache"},
    "jobs": {"dataplane", "registry", "scaling", "security", "observe", "runtime"},
    "delivery": {"dataplane", "scaling", "registry", "observe", "security"},
    "platform": {
        "cluster",
        "delivery",
        "backends",
        "dataplane",
        "deploy",
        "jobs",
        "observe",
        "registry",
        "scaling",
        "security",
        "store",
        "runtime",
        "cache",
        "batching",
    },
    "gateway": {
        "cluster",
        "delivery",
        "platform",
        "dataplane",
        "deploy",
        "jobs",
        "observe",
        "registry",
        "runtime",
        "scaling",
        "security",
        "store",
        "cache",
        "backends",
    },
    "cli": {
        "cluster",
        "gateway",
        "platform",
        "observe",
        "registry",
        "runtime",
        "scaling",
        "security",
        "store",
        "deploy",
        "jobs",
        "examples",
    },
    "examples": set(),
    "api": {"runtime"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*kept, base] if base else kept)
                # ``from pkg import mod`` depends on pkg.mod when that is a module
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # the package itself re-exports what handlers use (coldbrew.after_fork)
    top = parts[1]
    return "core" if top in CORE_MODULES else top


def test_layers_import_downwards_only() -> None:
    wrong = []
    for module, targets in import_graph().items():
        source = layer_of(module)
        for target in targets:
            layer = layer_of(target)
            if layer in (source, "core", "api"):  # the package itself: ``__version__``
                continue
            if source == "core" or layer not in LAYERS.get(source, set()):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(wrong)


def test_no_import_circle_across_folders() -> None:
    graph = import_graph()
    circles = [c for c in _strongly_connected(graph) if len({layer_of(m) for m in c}) > 1]
    assert not circles, f"import circles across folders: {circles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph is small, but recursion depth is not ours)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    nodes = set(graph) | {t for ts in graph.values() for t in ts}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_checker_sees_a_circle() -> None:
    """The circle check itself must be able to fail."""
    graph = {"coldbrew.a.x": {"coldbrew.b.y"}, "coldbrew.b.y": {"coldbrew.a.x"}}
    assert _strongly_connected(graph) == [["coldbrew.a.x", "coldbrew.b.y"]]
