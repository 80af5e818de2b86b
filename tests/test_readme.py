"""The README is the user's entry point: its first commands and its reference tables must be true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

README = (REPO_ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```", 2)[1]
    assert "make scaling-study" in first_block and "make test" in first_block


def test_reference_tables_match_the_code():
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "docs" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_config_group_is_documented():
    groups = sorted(p.name for p in (REPO_ROOT / "conf").iterdir() if p.is_dir())
    missing = [g for g in groups if f"| `{g}` |" not in README]
    assert not missing, f"config groups missing from the README table: {missing}"
    for option in (REPO_ROOT / "conf").glob("*/*.yaml"):
        assert f"`{option.stem}`" in README, f"{option.parent.name}/{option.name} is not in the README"
