"""The README is the user's entry point and docs/ holds the rest: the first commands, the links, the
reference tables and the config-group table must be true (test_docs_commands.py checks every command)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO_ROOT / "docs"

README = (REPO_ROOT / "README.md").read_text()
PAGES = [REPO_ROOT / "README.md", *sorted(DOCS_DIR.glob("*.md"))]
#: Pages of this documentation set (docs/design.md is the internal contract between modules, kept apart).
USER_PAGES = [p for p in PAGES if p.name != "design.md"]
README_MAX_LINES = 200
MACHINE = "2-core AMD EPYC CPU, 24 GiB, no GPU"
#: Files the docs name that a command writes (not in the repository).
OUTPUTS = {"bench/results.json"}


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^(`{3,}).*?^\1\s*$", "", text, flags=re.S | re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(path.read_text()), flags=re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _prose(path.read_text()))


def test_readme_starts_with_the_two_commands():
    first_block = README.split("```", 2)[1]
    assert "make scaling-study" in first_block and "make test" in first_block


def test_readme_fits_on_a_screen():
    lines = len(README.splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_readme_links_every_section_and_every_docs_page():
    links = set(_links(REPO_ROOT / "README.md"))
    sections = re.findall(r"^## (.+)$", _prose(README), flags=re.M)
    assert sections
    missing = [s for s in sections if f"#{_slug(s)}" not in links]
    assert not missing, f"README sections not linked from the README's contents line: {missing}"
    pages = [
        p for p in DOCS_DIR.glob("*.md") if f"docs/{p.name}" not in {link.split("#")[0] for link in links}
    ]
    assert not pages, f"docs pages the README does not link: {[p.name for p in pages]}"


def test_relative_links_and_anchors_resolve():
    broken = []
    for page in PAGES:
        for link in _links(page):
            if re.match(r"[a-z]+:", link):
                continue  # http(s), mailto: not checked offline
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {link} (no heading #{anchor} in {path.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_repository_paths_named_in_the_docs_exist():
    """A path in backticks (`conf/...`, `tests/...`) exists, is a study file the docs show, or an output."""
    shown = set(
        re.findall(r"^```ya?ml\n#\s*(sweeps/[\w.-]+\.yaml)", "".join(p.read_text() for p in PAGES), re.M)
    )
    missing = []
    for page in USER_PAGES:
        for path in re.findall(
            r"`((?:conf|src|sweeps|analysis|tests|bench|docs|\.ci)/[^`\s<>*$]*)`", page.read_text()
        ):
            if path not in shown | OUTPUTS and not (REPO_ROOT / path).exists():
                missing.append(f"{page.name}: {path}")
    assert not missing, f"paths named in the docs that do not exist: {missing}"


def test_measured_figures_are_dated_in_one_table_per_page():
    """Dates appear only in a page's `## Measured` table, and every row of it names its date and machine."""
    for page in USER_PAGES:
        text = _prose(page.read_text())
        body, _, measured = text.partition("\n## Measured\n")
        dated = re.findall(r".*\b20\d\d-\d\d-\d\d\b.*", body)
        assert not dated, f"{page.name}: dates outside its Measured table: {dated}"
        if not measured:
            continue
        rows = [line for line in measured.splitlines() if line.startswith("|")]
        header = [c.strip() for c in rows[0].strip("|").split("|")]
        assert "date" in header and "machine" in header, f"{page.name}: Measured table needs date and machine"
        date, machine = header.index("date"), header.index("machine")
        for row in rows[2:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert re.fullmatch(r"20\d\d-\d\d-\d\d|—", cells[date]), f"{page.name}: no date in {row}"
            assert cells[machine] in (MACHINE, "—"), f"{page.name}: machine should read {MACHINE!r}: {row}"


def test_reference_tables_match_the_code():
    proc = subprocess.run(
        [sys.executable, str(DOCS_DIR / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_config_group_is_documented():
    page = (DOCS_DIR / "config-groups.md").read_text()
    groups = sorted(p.name for p in (REPO_ROOT / "conf").iterdir() if p.is_dir())
    missing = [g for g in groups if f"| `{g}` |" not in page]
    assert not missing, f"config groups missing from docs/config-groups.md: {missing}"
    for option in (REPO_ROOT / "conf").glob("*/*.yaml"):
        assert f"`{option.stem}`" in page, (
            f"{option.parent.name}/{option.name} is not in docs/config-groups.md"
        )
