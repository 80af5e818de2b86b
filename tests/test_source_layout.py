"""The layout of ``src/datascale``, read with ``ast``: no module cycle, no private name taken from another
module, no function over 80 lines (the analysis package has its own, stricter check in
tests/analysis/test_package_layout.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "datascale"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(), filename=str(path)))
    return out


MODULES = _modules()


def _target(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``import from`` reads (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(name: str) -> tuple[set[str], list[str]]:
    """(datascale modules this module imports, at any scope; private names it takes from another one)."""
    path, tree = MODULES[name]
    edges: set[str] = set()
    private: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            target = _target(name, path, node)
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    edges.add(f"{target}.{alias.name}")
                elif target in MODULES:
                    edges.add(target)
                    dunder = alias.name.startswith("__") and alias.name.endswith("__")
                    if alias.name.startswith("_") and not dunder and target != name:
                        private.append(f"{target}.{alias.name}")
    return edges - {name}, private


def test_no_import_cycle_between_modules() -> None:
    graph = nx.DiGraph()
    for name in MODULES:
        graph.add_edges_from((name, other) for other in _imports(name)[0])
    assert list(nx.simple_cycles(graph)) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_crosses_a_module(name: str) -> None:
    assert _imports(name)[1] == []


def test_no_function_over_80_lines() -> None:
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, (_, tree) in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or 0) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
