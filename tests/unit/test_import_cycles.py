"""The worker runtime's modules import one another one way only: no cycle, not even one that only a
type checker sees (``if TYPE_CHECKING:``) or that an import inside a function hides.

Read from the source (``ast``), so that what is imported lazily counts as much as what is imported
at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "conductor_workers"

# The runtime: the runner's parts, the manager and what reports on it.
RUNTIME = {
    "runner", "_runner_state", "_polling", "_executing", "_reporting", "_lease", "_exit", "_stats",
    "manager", "health", "status", "worker", "time_limit", "tracing", "client",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> Set[str]:
    """Every module of the package that ``path`` imports, wherever the import statement stands."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else list(package)
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("conductor_workers"):
                target = node.module.split(".")[1:]
            else:
                continue
            found.add(".".join(target))
            found.update(".".join([*target, alias.name]) for alias in node.names)  # from . import module
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("conductor_workers.")]
            found.update(".".join(name.split(".")[1:]) for name in names)
    return found


def _graph() -> Dict[str, Set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {dep for dep in _imports(path, name) if dep in paths and dep != name} for name, path in paths.items()
    }


def _cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[Set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_runtime_modules() -> None:
    graph = _graph()
    assert RUNTIME <= set(graph)
    assert {"_runner_state", "_polling", "_executing", "_reporting"} <= graph["runner"]


def test_no_runtime_module_is_part_of_an_import_cycle() -> None:
    cycles = [sorted(component) for component in _cycles(_graph()) if component & RUNTIME]
    assert cycles == []
