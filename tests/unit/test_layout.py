"""The house shows its data path: no import cycles between our modules, and no runtime module
imports the development tooling (consumer/devtools): checked on the source, without importing it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGES = ("consumer", "schemas", "storage")
# Development tooling, and the command line that starts it on request (`stack up`).
DEV_ONLY = ("consumer.devtools", "consumer.__main__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def all_imports(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere: at its top, in a function (deferred) or for
    types only. A cycle hidden by a deferred or type-only import is still a cycle between two
    parts that each need the other."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {}
    for name, path in found.items():
        edges[name] = all_imports(path, known) - {name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:  # noqa: C901 (Tarjan's, as written)
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def without_packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exports its own modules: importing a module through its package
    is not a cycle between stages, so edges from a module into its own package are left out."""
    return {
        name: {t for t in targets if not (name.startswith(t + ".") and t != name)}
        for name, targets in edges.items()
    }


def test_no_import_cycles() -> None:
    assert cycles(without_packages(graph())) == []


def test_runtime_code_never_imports_the_development_tooling() -> None:
    found = modules()
    offenders = {
        name: sorted(i for i in all_imports(path, set(found)) if i.startswith("consumer.devtools"))
        for name, path in found.items()
        if not name.startswith(DEV_ONLY)
    }
    assert {name: got for name, got in offenders.items() if got} == {}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_folder_map_names_every_module_of_the_data_path() -> None:
    """docs/development.md's table of the folders a record meets names each of their modules,
    so that a new module is placed on the map when it is added."""
    table = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `/"): line for line in table.splitlines() if "| `" in line}
    for folder in ("intake", "requests", "generation", "output", "ops"):
        row = rows[f"consumer/{folder}"]
        for path in sorted((ROOT / "consumer" / folder).glob("*.py")):
            if path.stem != "__init__":
                assert f"`{path.stem}`" in row, f"consumer/{folder}/{path.name} is not on the map"
