"""The package layout holds: one engine per function, the CLI apart, no cycles between packages.

Read from the sources' import statements (any `import`, at module level or inside a function), so a
new import that breaks the layout fails here before it confuses a reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO / "shared"
ENGINES = ("normalize", "detect", "enrich", "inventory", "delivery")
MAX_LOOSE_MODULES = 8


def imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "shared":
                yield from (f"shared.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def unit_of(module: str) -> str | None:
    """`shared.detect.state` → `shared.detect`; a loose module is its own unit; non-project → None."""
    parts = module.split(".")
    if parts[0] != "shared" or len(parts) == 1:
        return None
    return ".".join(parts[:2])


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SHARED.rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        source = unit_of(module)
        if source is None:
            continue
        for target in map(unit_of, imported_modules(path)):
            if target is not None and target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node):], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, [*trail, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycle_between_shared_packages() -> None:
    assert find_cycle(unit_graph()) is None


def test_the_cycle_check_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_but_the_entry_point_imports_the_cli() -> None:
    importers = {source for source, targets in unit_graph().items() if "shared.cli" in targets}
    assert importers == {"shared.__main__"}


@pytest.mark.parametrize("engine", ENGINES)
def test_each_function_package_imports_its_own_engine(engine: str) -> None:
    binding = REPO / f"{engine}_fn" / "__init__.py"
    units = {unit_of(module) for module in imported_modules(binding)} - {None}
    engines = {unit for unit in units if unit is not None and unit.removeprefix("shared.") in ENGINES}
    assert engines == {f"shared.{engine}"}
    assert "shared.cli" not in units


def test_few_loose_modules_stay_directly_in_shared() -> None:
    loose = sorted(path.name for path in SHARED.glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, loose
