"""Cutting a long text into documents of bounded size at natural boundaries (shared by the built-in domains,
the ``web`` domain and the quality classifier's reference text).

:func:`chunk_text` is lossless (the pieces concatenate to the text); :func:`document_chunks` is what a corpus
builder keeps of it: pieces without their edge newlines, blank pieces dropped.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

#: A paragraph break: the boundary every text kind shares (the last resort before single newlines).
BLANK_LINE = re.compile(r"\n[ \t]*\n")


def _cut_points(text: str, pattern: re.Pattern[str]) -> list[int]:
    return [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text)]


def _split_at(text: str, points: Sequence[int]) -> list[str]:
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _hard_split(text: str, max_bytes: int) -> list[str]:
    """Last resort for one over-long line: cut by characters so each piece is at most ``max_bytes`` UTF-8
    bytes."""
    pieces: list[str] = []
    cur: list[str] = []
    size = 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if cur and size + n > max_bytes:
            pieces.append("".join(cur))
            cur, size = [], 0
        cur.append(ch)
        size += n
    if cur:
        pieces.append("".join(cur))
    return pieces


def chunk_text(text: str, max_bytes: int, boundaries: Sequence[re.Pattern[str]]) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_bytes`` UTF-8 bytes, preferring the earliest boundary kinds.

    The text is cut at the first boundary kind; pieces still too long are cut at the next kind (finally at
    newlines, then by characters), and neighbouring pieces are packed up to an even share of the text (never
    past ``max_bytes``), so a long scene becomes equal parts rather than full parts plus a scrap. Lossless:
    the pieces concatenate to ``text``.
    """

    def units(piece: str, level: int) -> list[str]:
        if len(piece.encode("utf-8")) <= max_bytes:
            return [piece]
        if level == len(patterns):
            return _hard_split(piece, max_bytes)
        out: list[str] = []
        for part in _split_at(piece, _cut_points(piece, patterns[level])):
            out.extend(units(part, level + 1))
        return out

    patterns = [*boundaries, re.compile(r"\n")]
    pieces = units(text, 0)
    sizes = [len(p.encode("utf-8")) for p in pieces]
    target = sum(sizes) / max(1, -(-sum(sizes) // max_bytes))  # balanced: no tiny last piece
    chunks: list[str] = []
    cur, size = "", 0
    for piece, n in zip(pieces, sizes, strict=True):
        if cur and size + n > max_bytes:
            chunks.append(cur)
            cur, size = "", 0
        cur += piece
        size += n
        if size >= target:
            chunks.append(cur)
            cur, size = "", 0
    if cur:
        chunks.append(cur)
    if len(chunks) > 1 and len(chunks[-2].encode("utf-8")) + len(chunks[-1].encode("utf-8")) <= max_bytes:
        chunks[-2:] = [chunks[-2] + chunks[-1]]  # a scrap left after the even shares joins its neighbour
    return chunks


def document_chunks(text: str, max_doc_bytes: int, boundaries: Sequence[re.Pattern[str]]) -> list[str]:
    """:func:`chunk_text` as documents: each piece without its edge newlines, blank pieces dropped."""
    out = [c.strip("\n") for c in chunk_text(text, max_doc_bytes, boundaries)]
    return [c for c in out if c.strip()]
