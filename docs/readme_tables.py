"""Render the reference tables of docs/records.md from the code's own documentation (`make docs`; a test keeps
them in sync: ``python docs/readme_tables.py --check`` exits non-zero when they are stale).

Sections between ``<!-- NAME -->`` and ``<!-- /NAME -->`` markers are replaced.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "records.md"
#: Where each package's source lives (the analysis package is a top-level folder of its own).
SOURCE_ROOTS = {"datascale": REPO / "src", "scaling_analysis": REPO / "analysis"}


def find(name: str, package: str) -> Any:
    """The object ``name`` defined at the top level of some module of ``package``, wherever it lives now.

    Modules get moved; the object's name is the stable part. The package's source is searched for a top-level
    ``def``/``class``/assignment of the name, and the first module that defines it and imports is used.
    """
    root = SOURCE_ROOTS[package]
    pattern = re.compile(rf"^(?:def {name}\(|class {name}\b|{name}\s*(?::[^=\n]*)?=)", re.M)
    errors = []
    for path in sorted((root / package).rglob("*.py")):
        if not pattern.search(path.read_text(encoding="utf-8", errors="replace")):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            errors.append(f"{module}: {err}")
    raise LookupError(
        f"{name} is not defined at the top level of any module of {package} ({'; '.join(errors)})"
    )


def _table(header: tuple[str, str], rows: dict[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| `{key}` | {text.replace('|', '/').replace(chr(10), ' ')} |" for key, text in rows.items()]
    return "\n".join(lines)


def sections() -> dict[str, str]:
    record_fields = find("field_docs", "datascale")()
    run_columns = find("COLUMNS", "scaling_analysis")
    fit_json_fields = find("FIT_JSON_FIELDS", "scaling_analysis")
    result_fields = find("analysis_result_docs", "scaling_analysis")()
    return {
        "RECORD_COLUMNS": "## Run record (`runs/<run_id>/record.json`)\n\nOne JSON object per run, written "
        "atomically when the run finishes (`RunRecord`).\n\n" + _table(("field", "meaning"), record_fields),
        "RUNS_COLUMNS": "## Run table (`runs.parquet`)\n\nOne row per run, built from the records by "
        "`load_records` (or from a W&B group with `load_wandb_runs`, or any CSV with a column mapping with "
        "`load_table`).\n\n" + _table(("column", "meaning"), run_columns),
        "FIT_JSON": "## `fit.json`\n\n" + _table(("field", "meaning"), fit_json_fields),
        "ANALYSIS_RESULT": "## Analysis result\n\n`analyze_study`, `analyze_table` and `analyze_frame` "
        "return a `StudyAnalysis`; a skipped step's result is None and `skipped` says why.\n\n"
        + _table(("field", "meaning"), result_fields),
    }


def render(text: str) -> str:
    for name, body in sections().items():
        pattern = re.compile(rf"<!-- {name} -->.*?<!-- /{name} -->", re.S)
        block = f"<!-- {name} -->\n{body}\n<!-- /{name} -->"
        if not pattern.search(text):
            raise SystemExit(
                f"{TARGET.relative_to(REPO)}: marker <!-- {name} --> ... <!-- /{name} --> not found"
            )
        text = pattern.sub(lambda _m, block=block: block, text)  # type: ignore[misc]
    return text


def main() -> None:
    current = TARGET.read_text(encoding="utf-8")
    rendered = render(current)
    if "--check" in sys.argv:
        stale = f"{TARGET.relative_to(REPO)} tables are stale: run `make docs`"
        raise SystemExit(0 if rendered == current else stale)
    TARGET.write_text(rendered, encoding="utf-8")


if __name__ == "__main__":
    main()
