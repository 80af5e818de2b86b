"""Render the README's reference tables from the code's own documentation (`make docs`; a test keeps them in
sync).

Sections between ``<!-- NAME -->`` and ``<!-- /NAME -->`` markers are replaced.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from scaling_analysis.data import COLUMNS
from scaling_analysis.fitjson import FIT_JSON_FIELDS
from scaling_analysis.study import analysis_result_docs

from datascale.records import field_docs

README = Path(__file__).resolve().parents[1] / "README.md"


def _table(header: tuple[str, str], rows: dict[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| `{key}` | {text.replace('|', '/').replace(chr(10), ' ')} |" for key, text in rows.items()]
    return "\n".join(lines)


def sections() -> dict[str, str]:
    return {
        "RECORD_COLUMNS": "### Run record (`runs/<run_id>/record.json`)\n\nOne JSON object per run, written "
        "atomically when the run finishes; `datascale.records.RunRecord`.\n\n"
        + _table(("field", "meaning"), field_docs()),
        "RUNS_COLUMNS": "### Run table (`runs.parquet`)\n\nOne row per run, built from the records by "
        "`scaling_analysis.data.load_records` (or from a W&B group / any CSV with a column mapping).\n\n"
        + _table(("column", "meaning"), COLUMNS),
        "FIT_JSON": "### `fit.json`\n\n" + _table(("field", "meaning"), FIT_JSON_FIELDS),
        "ANALYSIS_RESULT": "`analyze_study`, `analyze_table` and `analyze_frame` return a "
        "`scaling_analysis.study.StudyAnalysis`; a skipped step's result is None and `skipped` says why.\n\n"
        + _table(("field", "meaning"), analysis_result_docs()),
    }


def render(text: str) -> str:
    for name, body in sections().items():
        pattern = re.compile(rf"<!-- {name} -->.*?<!-- /{name} -->", re.S)
        block = f"<!-- {name} -->\n{body}\n<!-- /{name} -->"
        if not pattern.search(text):
            raise SystemExit(f"README.md: marker <!-- {name} --> ... <!-- /{name} --> not found")
        text = pattern.sub(lambda _m, block=block: block, text)
    return text


def main() -> None:
    current = README.read_text()
    rendered = render(current)
    if "--check" in sys.argv:
        raise SystemExit(0 if rendered == current else "README.md tables are stale: run `make docs`")
    README.write_text(rendered)


if __name__ == "__main__":
    main()
