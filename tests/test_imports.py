"""The package's shape: no module imports itself back through others, at any depth."""

from __future__ import annotations

import ast
from pathlib import Path

import mlplab

PACKAGE = Path(mlplab.__file__).parent


def imports_of(path: Path) -> set[str]:
    """The mlplab modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlplab"):
            names = (
                [node.module]
                if node.module != "mlplab"
                else [f"mlplab.{a.name}" for a in node.names]
            )
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mlplab."))
    return found - {f"mlplab.{path.stem}"}


def test_no_import_circles_in_the_package() -> None:
    graph = {f"mlplab.{p.stem}": imports_of(p) for p in PACKAGE.glob("*.py")}
    graph = {name: {i for i in deps if i in graph} for name, deps in graph.items()}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start] - seen:
            if nxt == target or reaches(nxt, target, seen | {nxt}):
                return True
        return False

    circles = [name for name in graph if reaches(name, name, set())]
    assert not circles, f"modules that import themselves back: {circles}"
