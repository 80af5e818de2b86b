"""The layout of ``scaling_analysis``, read from the source with ``ast``: wings import one way, no module
cycle, no private name crosses a module, no function over 80 lines, only torch-free datascale modules
imported, and every module imports without torch.

Wings, in import order (a module imports from its own wing or an earlier one only):
engine <- render <- tables <- steps <- report <- the top level (study, cli).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from scaling_analysis.report.fitjson import FIT_JSON_FIELDS
from scaling_analysis.steps import STUDY_STEPS, StepResult

PACKAGE = "scaling_analysis"
ROOT = Path(__file__).resolve().parents[2] / "analysis" / PACKAGE
WINGS = ("engine", "render", "tables", "steps", "report", "")  # "": the top level
#: datascale modules the analysis may import: torch-free ones only (records, run protocols, precision/recall
#: of removals)
ALLOWED_DATASCALE = {"datascale.records", "datascale.run_id", "datascale.data.quality.evaluation"}
MAX_FUNCTION_LINES = 80


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # package modules imported (any depth, any scope)
    external: set[str] = field(default_factory=set)  # datascale modules imported
    private: list[str] = field(default_factory=list)  # private names taken from other modules

    @property
    def wing(self) -> str:
        """The subpackage the module lives in ("" for the top level)."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 and (ROOT / parts[1]).is_dir() else ""

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(mod: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _scan(mod: Module, names: set[str]) -> None:
    """Fill ``mod.imports``, ``mod.external`` and ``mod.private`` from every import in the module."""
    aliases: set[str] = set()  # local names bound to package modules
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE:
                    mod.imports.add(a.name)
                    aliases.add(a.asname or a.name.split(".")[0])
                elif a.name.split(".")[0] == "datascale":
                    mod.external.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(mod, node)
            if target.split(".")[0] == "datascale":
                mod.external.add(target)
                continue
            if target.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in names:  # `from . import plots`: the submodule
                    mod.imports.add(sub)
                    aliases.add(a.asname or a.name)
                else:
                    mod.imports.add(target)
                    if a.name.startswith("_"):
                        mod.private.append(f"{target}.{a.name}")
    for node in ast.walk(mod.tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        if node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__"):
            mod.private.append(f"{node.value.id}.{node.attr}")


def _modules() -> dict[str, Module]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        mods[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8")))
    for mod in mods.values():
        _scan(mod, set(mods))
    return mods


MODULES = _modules()


def test_the_layout_is_the_documented_one() -> None:
    wings = {m.wing for m in MODULES.values()}
    assert wings == set(WINGS), wings
    assert {"scaling_analysis.study", "scaling_analysis.cli", "scaling_analysis.__main__"} <= set(MODULES)


def test_wings_import_one_way() -> None:
    rank = {w: i for i, w in enumerate(WINGS)}
    bad = [
        f"{m.name} ({m.wing or 'top'}) imports {t} ({MODULES[t].wing or 'top'})"
        for m in MODULES.values()
        for t in sorted(m.imports)
        if t in MODULES and rank[MODULES[t].wing] > rank[m.wing]
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_modules() -> None:
    graph = {name: sorted(t for t in m.imports if t in MODULES and t != name) for name, m in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (cycle := visit(start, [start])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_private_name_crosses_a_module() -> None:
    bad = [f"{m.name}: {p}" for m in MODULES.values() for p in m.private]
    assert not bad, "\n".join(bad)


def test_only_torch_free_datascale_modules_are_imported() -> None:
    bad = [f"{m.name}: {e}" for m in MODULES.values() for e in sorted(m.external - ALLOWED_DATASCALE)]
    assert not bad, "\n".join(bad)


def test_no_function_is_longer_than_80_lines() -> None:
    long = [
        f"{m.name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for m in MODULES.values()
        for node in ast.walk(m.tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "\n".join(long)


def test_every_module_imports_without_torch(tmp_path: Path) -> None:
    names = sorted(n for n in MODULES if not n.endswith("__main__"))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = ('torch', 'pytorch_lightning', 'lightning')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_every_study_step_documents_the_fit_json_fields_it_fills() -> None:
    names = [s.name for s in STUDY_STEPS]
    assert len(names) == len(set(names)), names
    for step in STUDY_STEPS:
        assert step.fields and set(step.fields) <= set(FIT_JSON_FIELDS), step.name
        skipped = StepResult.skip(step.name, step.fields, "why")
        assert step.sections(skipped.fields) == [], f"{step.name}: a skipped step renders no section"
    documented = [f for s in STUDY_STEPS for f in s.fields]
    assert len(documented) == len(set(documented)), "two steps fill the same fit.json field"
