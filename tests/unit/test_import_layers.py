"""The package's architecture, held mechanically: every import of the tool's own modules — at the
top, inside a function or under ``TYPE_CHECKING`` — points down the layers, and no two modules
import each other, directly or around a loop."""
from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

import storage_migrator

PACKAGE = Path(storage_migrator.__file__).parent

# Top to bottom; a module may import its own package and anything in a lower layer.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__main__"}),
    frozenset({"cli"}),
    frozenset({"commands"}),
    frozenset({"engine"}),
    frozenset({"demo"}),
    frozenset({"storage", "db"}),
    frozenset({"patch"}),
    frozenset({"metrics"}),
    frozenset({"report"}),
    frozenset({"errors", "records", "config", "faults", "cloud"}),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Every module of the tool ``path`` imports, wherever the import statement is."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("storage_migrator"):
            yield node.module
            for alias in node.names:        # ``from storage_migrator.patch import writer``
                candidate = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists():
                    yield candidate
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports itself absolutely")
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("storage_migrator"))


@functools.cache
def import_graph() -> dict[str, set[str]]:
    return {module_name(path): set(imported_modules(path)) for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def test_every_module_is_in_a_layer() -> None:
    for module in import_graph():
        if module != "storage_migrator":
            layer_of(module)


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_imports_point_down(module: str) -> None:
    if module == "storage_migrator":
        return
    own_package = module.split(".")[1]
    upward = [imported for imported in import_graph()[module]
              if imported != "storage_migrator" and imported.split(".")[1] != own_package
              and layer_of(imported) <= layer_of(module)]
    assert not upward, f"{module} imports {upward}, which are not below it"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of ``graph``, or None (depth-first search with colours)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == "open":
                return stack[stack.index(neighbour):] + [neighbour]
            if neighbour not in state and (cycle := visit(neighbour)) is not None:
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_find_cycle_sees_a_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle() -> None:
    graph = {module: {imported for imported in imports if imported != module}
             for module, imports in import_graph().items()}
    assert find_cycle(graph) is None
