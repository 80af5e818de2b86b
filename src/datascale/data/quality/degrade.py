"""Controlled degradation of the training pool (Hydra ``degrade`` group): known noise at a known rate.

A fraction ``p`` of the documents (exactly ``round(p * n)``, rounded half up, drawn with ``seed``) is
corrupted in one way, or in all ways (``mix``: the kinds dealt out evenly). Every corrupted or added document
is listed in ``report.marked`` (doc id -> kind), so that the loss cost of the noise can be measured and
the later dedup/filter/select steps can be scored on how much of it they remove (:mod:`.evaluation`).

* ``typos``: each letter replaced, dropped, doubled or swapped with its neighbour, with probability
  ``strength``.
* ``word_noise``: each word replaced, with probability ``strength``, by a random word type of the pool.
* ``shuffle``: the text cut into spans of ``span_words`` words; a fraction ``strength`` of them change places.
* ``duplicates``: ``copies`` added copies ``<id>#dup<k>`` right after the original, each with a fraction
  ``strength`` of its words replaced (0: exact copies; small values: near duplicates). The copies are marked.
* ``boilerplate``: web chrome (navigation, cookie notice, share buttons, footer) added at the top and bottom,
  and after each paragraph with probability ``strength``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from datascale.config_errors import require, require_choice, require_in_range
from datascale.data.documents import validate_documents
from datascale.data.quality.base import all_columns, from_columns, is_int, require_seed
from datascale.data.transforms import TransformReport

DEGRADE_VERSION = 1
KINDS: tuple[str, ...] = ("typos", "word_noise", "shuffle", "duplicates", "boilerplate")
KIND_CHOICES: tuple[str, ...] = (*KINDS, "mix")
DEFAULT_STRENGTH: dict[str, float] = {
    "typos": 0.05,
    "word_noise": 0.3,
    "shuffle": 1.0,
    "duplicates": 0.0,
    "boilerplate": 0.5,
}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
BOILERPLATE_HEADERS: tuple[str, ...] = (
    "Skip to main content",
    "Home | About | Blog | Contact | Privacy Policy",
    "Menu  Search  Sign in  Register",
    "We use cookies to improve your experience. By continuing you accept our cookie policy. [Accept]",
)
BOILERPLATE_INLINE: tuple[str, ...] = (
    "Click here to read more.",
    "Share this: Facebook | Twitter | LinkedIn | Email",
    "Advertisement",
    "Subscribe to our newsletter for the latest updates!",
    "Related posts: Top 10 tips you need to know",
)
BOILERPLATE_FOOTERS: tuple[str, ...] = (
    "Copyright © 2024 All rights reserved.",
    "Terms of Use | Privacy Policy | Cookie Settings | Sitemap",
    "Powered by WordPress. Theme by Example Themes.",
    "Back to top ^",
)
_WORD_WITH_SPACE = re.compile(r"\S+\s*")
_WORD = re.compile(r"\w+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def add_typos(text: str, rng: np.random.Generator, rate: float) -> str:
    """Each letter, with probability ``rate``, replaced, dropped, doubled or swapped with the next letter."""
    chars = list(text)
    hits = np.flatnonzero(rng.random(len(chars)) < rate) if chars else np.array([], dtype=int)
    ops = rng.integers(0, 4, size=len(hits))
    letters = rng.integers(0, len(LETTERS), size=len(hits))
    for pos, op, letter in zip(hits[::-1], ops[::-1], letters[::-1], strict=True):
        if not chars[pos].isalpha():
            continue
        if op == 0:
            chars[pos] = LETTERS[letter]
        elif op == 1:
            del chars[pos]
        elif op == 2:
            chars.insert(pos, chars[pos])
        elif pos + 1 < len(chars) and chars[pos + 1].isalpha():  # swaps stay inside a word
            chars[pos], chars[pos + 1] = chars[pos + 1], chars[pos]
    return "".join(chars)


def replace_words(text: str, rng: np.random.Generator, rate: float, vocabulary: list[str]) -> str:
    """Each word (``\\w+``), with probability ``rate``, replaced by a uniform draw from ``vocabulary``."""
    if not vocabulary:
        return text
    matches = list(_WORD.finditer(text))
    hits = np.flatnonzero(rng.random(len(matches)) < rate)
    picks = rng.integers(0, len(vocabulary), size=len(hits))
    pieces, last = [], 0
    for k, pick in zip(hits, picks, strict=True):
        m = matches[k]
        pieces += [text[last : m.start()], vocabulary[pick]]
        last = m.end()
    return "".join(pieces) + text[last:]


def shuffle_spans(text: str, rng: np.random.Generator, rate: float, span_words: int) -> str:
    """Spans of ``span_words`` words; ``round(rate * spans)`` of them (at least 2) permuted."""
    lead = text[: len(text) - len(text.lstrip())]
    words = _WORD_WITH_SPACE.findall(text)
    spans = ["".join(words[i : i + span_words]) for i in range(0, len(words), span_words)]
    if len(spans) < 2:
        return text
    if not spans[-1][-1:].isspace():
        spans[-1] += " "  # so a moved last span does not glue onto its new neighbour
    n_moved = min(len(spans), max(2, int(rate * len(spans) + 0.5)))
    places = np.sort(rng.choice(len(spans), size=n_moved, replace=False))
    order = rng.permutation(places)
    if np.array_equal(order, places):
        order = np.roll(places, 1)  # a permutation that moves nothing is no corruption
    shuffled = list(spans)
    for dst, src in zip(places, order, strict=True):
        shuffled[dst] = spans[src]
    return lead + "".join(shuffled).rstrip() + text[len(text.rstrip()) :]


def add_boilerplate(text: str, rng: np.random.Generator, rate: float) -> str:
    """Header lines at the top, footer lines at the bottom, and a boilerplate line after each paragraph with
    probability ``rate``."""

    def pick(lines: tuple[str, ...], k: int) -> list[str]:
        return [lines[i] for i in rng.choice(len(lines), size=k, replace=False)]

    paragraphs = _PARAGRAPH_BREAK.split(text)
    body = []
    for paragraph in paragraphs:
        body.append(paragraph)
        if rng.random() < rate:
            body.append(pick(BOILERPLATE_INLINE, 1)[0])
    header, footer = pick(BOILERPLATE_HEADERS, 2), pick(BOILERPLATE_FOOTERS, 2)
    return "\n\n".join(["\n".join(header), *body, "\n".join(footer)])


def pool_vocabulary(texts: list[str]) -> list[str]:
    """Every word type of the pool, sorted: the replacement words of ``word_noise`` and near-duplicates."""
    return sorted({w for text in texts for w in _WORD.findall(text)})


def selected_count(fraction: float, n: int) -> int:
    """``round(fraction * n)``, rounded half up (Python's ``round`` rounds half to even)."""
    return int(fraction * n + 0.5)


@dataclass
class Degrade:
    """Corrupt exactly ``round(fraction * n)`` documents, chosen with ``seed``, in the way ``kind`` says.

    ``strength`` (per kind: the letter rate of ``typos``, the word rate of ``word_noise`` and of the copies
    of ``duplicates``, the moved share of spans of ``shuffle``, the per-paragraph rate of ``boilerplate``)
    defaults to :data:`DEFAULT_STRENGTH` of each kind when null; with ``mix`` a set strength applies to
    every kind.
    """

    kind: str = "mix"
    fraction: float = 0.2
    seed: int = 0
    strength: float | None = None
    span_words: int = 8
    copies: int = 1
    name: str | None = None

    def __post_init__(self) -> None:
        require_choice("kind", self.kind, KIND_CHOICES)
        require_in_range("fraction", self.fraction, 0.0, 1.0)
        require_seed(self.seed)
        if self.strength is not None:
            require_in_range("strength", self.strength, 0.0, 1.0)
        require(
            is_int(self.span_words) and self.span_words >= 1, "span_words", self.span_words, "must be >= 1"
        )
        require(
            is_int(self.copies) and 1 <= self.copies <= 100,
            "copies",
            self.copies,
            "must be an integer in [1, 100]",
        )
        if self.name is None:
            self.name = self.kind
        require(
            isinstance(self.name, str) and bool(self.name), "name", self.name, "must be a non-empty string"
        )

    def strength_of(self, kind: str) -> float:
        return float(DEFAULT_STRENGTH[kind] if self.strength is None else self.strength)

    def settings(self) -> dict[str, Any]:
        kinds = KINDS if self.kind == "mix" else (self.kind,)
        return {
            "kind": self.kind,
            "fraction": float(self.fraction),
            "seed": self.seed,
            "strength": {k: self.strength_of(k) for k in kinds},
            "span_words": self.span_words,
            "copies": self.copies,
        }

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "transform": "degrade", "version": DEGRADE_VERSION, **self.settings()}

    def assignments(self, n: int) -> dict[int, str]:
        """Row index -> kind of each document to corrupt (``mix``: kinds dealt in turn, seeded order)."""
        rng = np.random.default_rng(self.seed)
        chosen = rng.choice(n, size=selected_count(self.fraction, n), replace=False)
        if self.kind != "mix":
            return {int(i): self.kind for i in chosen}
        return {int(i): KINDS[j % len(KINDS)] for j, i in enumerate(chosen)}

    def corruptor(
        self, kind: str, vocabulary: Callable[[], list[str]]
    ) -> Callable[[str, np.random.Generator], str]:
        rate = self.strength_of(kind)
        if kind == "typos":
            return lambda text, rng: add_typos(text, rng, rate)
        if kind in ("word_noise", "duplicates"):
            return lambda text, rng: replace_words(text, rng, rate, vocabulary())
        if kind == "shuffle":
            return lambda text, rng: shuffle_spans(text, rng, rate, self.span_words)
        return lambda text, rng: add_boilerplate(text, rng, rate)

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        columns = all_columns(docs)
        plan = self.assignments(len(docs))
        words: list[list[str]] = []

        def vocabulary() -> list[str]:  # built once, only for the kinds that need it
            if not words:
                words.append(pool_vocabulary(columns["text"]))
            return words[0]

        corrupt = {kind: self.corruptor(kind, vocabulary) for kind in set(plan.values())}
        out: dict[str, list[Any]] = {name: [] for name in columns}
        marked: dict[str, str] = {}
        for i, doc_id in enumerate(columns["doc_id"]):
            row = {name: values[i] for name, values in columns.items()}
            kind = plan.get(i)
            rng = np.random.default_rng([self.seed, i])
            added = []
            if kind == "duplicates":
                for k in range(1, self.copies + 1):
                    copy_id = f"{doc_id}#dup{k}"
                    added.append({**row, "doc_id": copy_id, "text": corrupt[kind](row["text"], rng)})
                    marked[copy_id] = kind
            elif kind is not None:
                row["text"] = corrupt[kind](row["text"], rng)
                marked[doc_id] = kind
            for new_row in (row, *added):
                for name in out:
                    out[name].append(new_row[name])
        result = from_columns(out)
        validate_documents(result)  # a copy id `<id>#dup<k>` must not clash with an existing id
        stats = {
            "selected": len(plan),
            "added": len(result) - len(docs),
            "kinds": dict(Counter(plan.values())),
        }
        return result, TransformReport(
            str(self.name), self.settings(), len(docs), len(result), {}, marked, stats
        )
