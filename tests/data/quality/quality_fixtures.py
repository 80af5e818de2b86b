"""Hand-made documents for the quality-transform tests (a plain module, importable by name)."""

from __future__ import annotations

import json

import datasets
import numpy as np

from datascale.data.documents import documents_from_rows, make_document

#: Real English prose: passes every datatrove heuristic (checked by a test).
GOOD_PARAGRAPH = (
    "The river runs through the old town and past the mill where the farmers bring their grain "
    "every autumn.\n"
    "In the evenings the people walk along the water and talk about the harvest and the weather "
    "of the year.\n"
    "Children play near the bridge while their parents buy bread and cheese at the market in the square.\n"
    "The church bells ring at six o'clock and the shops close their doors for the night one after another.\n"
    "Visitors often say that the town feels calm and friendly, and many of them return the next summer.\n"
    "A small museum near the station tells the story of the valley and of the families who built the mill.\n"
)
GIBBERISH = " ".join(["xkq zvbr plmt wqrs"] * 20)
REPETITIVE = "\n".join(["The man and the dog walked to the park with the red ball."] * 30)


def docs(*rows: tuple[str, str] | tuple[str, str, str]) -> datasets.Dataset:
    """Documents from (doc_id, text[, domain]) tuples (domain defaults to ``web``)."""
    return documents_from_rows(
        make_document(row[0], row[1], row[2] if len(row) > 2 else "web", "test") for row in rows
    )


def with_quality(values: list[float | None], meta: list[dict] | None = None) -> datasets.Dataset:
    meta = meta or [{} for _ in values]
    return documents_from_rows(
        make_document(f"d{i}", f"text {i}", "web", "test", quality=v, meta=m)
        for i, (v, m) in enumerate(zip(values, meta, strict=True))
    )


def vocabulary(prefix: str, n: int) -> list[str]:
    """``n`` distinct made-up words (``prefix`` + letters): texts from them share nothing by chance."""
    rng = np.random.default_rng([int.from_bytes(prefix.encode("utf-8"), "little") % 2**32, n])
    letters = list("abcdefghijklmnopqrstuvwxyz")
    words: set[str] = set()
    while len(words) < n:
        words.add(prefix + "".join(rng.choice(letters, size=int(rng.integers(3, 8)))))
    return sorted(words)


def random_text(rng: np.random.Generator, words: list[str], n_words: int, line_words: int = 12) -> str:
    """Sentences of words drawn from ``words``, ``line_words`` per line, paragraphs of four lines."""
    picks = [words[i] for i in rng.integers(0, len(words), size=n_words)]
    lines = [" ".join(picks[i : i + line_words]) + "." for i in range(0, n_words, line_words)]
    return "\n\n".join("\n".join(lines[i : i + 4]) for i in range(0, len(lines), 4))


def meta_of(ds: datasets.Dataset, i: int) -> dict:
    return json.loads(ds[i]["meta"])
