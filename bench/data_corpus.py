"""Real text for the data-stage benchmark: files installed packages ship, as JSON lines.

``.py``/``.pyi`` files become ``code`` documents and ``.md``/``.rst``/``.txt`` files ``docs`` documents,
cut at line boundaries into documents of about ``doc_bytes`` bytes, in a fixed spread order. The
site-packages of this venv hold about 0.35 GB of such text; a larger corpus makes further passes over the
same files with other document lengths (5, 11, 13 kB ...), so no document repeats exactly (the corpus stage's
exact dedup would drop it) though the text does: the 1 GB point measures the pipeline at scale, not 1 GB of
distinct prose.

``python -m bench.data_corpus OUT.jsonl BYTES`` writes one corpus.
"""

from __future__ import annotations

import hashlib
import json
import site
import sys
from collections.abc import Iterator
from pathlib import Path

DOMAIN_OF = {".py": "code", ".pyi": "code", ".md": "docs", ".rst": "docs", ".txt": "docs"}
PASS_DOC_BYTES = (8192, 5003, 11003, 13001, 7001, 9001, 4001, 15001)


def pass_doc_bytes(n: int) -> int:
    """Document length of pass ``n``: the listed ones, then 3001 + 331 n (none equal to a listed one), so a
    corpus larger than 8 passes (2.8 GB here) still cuts every pass at its own length."""
    return PASS_DOC_BYTES[n] if n < len(PASS_DOC_BYTES) else 3001 + 331 * n


MAX_FILE_BYTES = 2_000_000


def source_files() -> list[Path]:
    """Every text file of the venv's site-packages this corpus takes, in a fixed spread order (by the hash of
    its path: packages and domains mixed)."""
    files: set[Path] = set()
    for root in site.getsitepackages():
        for path in Path(root).rglob("*"):
            if path.suffix in DOMAIN_OF and path.is_file() and 0 < path.stat().st_size <= MAX_FILE_BYTES:
                files.add(path)
    return sorted(files, key=lambda p: hashlib.sha1(str(p).encode()).hexdigest())


def chunks(text: str, doc_bytes: int) -> Iterator[str]:
    """``text`` cut at line ends into pieces of at least ``doc_bytes`` UTF-8 bytes (the last may be
    shorter)."""
    piece: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        piece.append(line)
        size += len(line.encode("utf-8"))
        if size >= doc_bytes:
            yield "".join(piece)
            piece, size = [], 0
    if piece:
        yield "".join(piece)


def records(files: list[Path]) -> Iterator[dict[str, str]]:
    """Documents pass after pass (each pass cuts the files at other lengths), without end."""
    for n in range(10**6):
        doc_bytes = pass_doc_bytes(n)
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for k, piece in enumerate(chunks(text, doc_bytes)):
                if piece.strip():
                    yield {"id": f"{n}/{path.name}/{k}", "domain": DOMAIN_OF[path.suffix], "text": piece}


def write_corpus(out: Path, n_bytes: int) -> dict[str, int]:
    """Write JSON lines until the texts hold ``n_bytes`` UTF-8 bytes; returns documents and text bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    docs = size = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in records(source_files()):
            if size >= n_bytes:
                break
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            docs += 1
            size += len(record["text"].encode("utf-8"))
    tmp.replace(out)
    return {"documents": docs, "text_bytes": size, "file_bytes": out.stat().st_size}


if __name__ == "__main__":
    print(write_corpus(Path(sys.argv[1]), int(float(sys.argv[2]))))
