"""Heuristic quality filters (Hydra ``filter`` group): datatrove's Gopher, C4 and FineWeb rules, and a
threshold on a quality value the source already provides.

The heuristics are datatrove's own (``datatrove.pipeline.filters``), not re-implemented here, so the numbers
match the published pipelines (Gopher: Rae et al. 2021; C4: Raffel et al. 2020; FineWeb: Penedo et al. 2024).
Each dropped document keeps the first rule that dropped it, as ``<filter>:<datatrove reason>``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from datascale.config_errors import require, require_choice
from datascale.data.documents import DocumentError, column
from datascale.data.quality.base import (
    all_columns,
    as_list,
    from_columns,
    library_versions,
    plain,
    require_nonempty_str,
    select_rows,
)
from datascale.data.transforms import TransformReport

#: Our filter names -> datatrove classes (in ``datatrove.pipeline.filters``).
DATATROVE_FILTERS: dict[str, str] = {
    "gopher_quality": "GopherQualityFilter",
    "gopher_repetition": "GopherRepetitionFilter",
    "c4": "C4QualityFilter",
    "fineweb": "FineWebQualityFilter",
}
HEURISTIC_VERSION = 1
MISSING_POLICIES = ("drop", "error")


@contextlib.contextmanager
def _torch_hidden() -> Iterator[None]:
    """Import spacy/thinc without torch: thinc imports torch when it can, and ``datascale.data`` must not (the
    Hydra job never imports torch; it would also cost seconds). No effect once torch is loaded."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def _filter_class(name: str) -> Any:
    import datatrove.pipeline.filters as filters

    return getattr(filters, DATATROVE_FILTERS[name])


def _check_options(options: dict[str, dict[str, Any]], filters: list[str]) -> None:
    for name, kwargs in options.items():
        require(name in filters, "options", options, f"keys must be filters listed in `filters` ({filters})")
        require(isinstance(kwargs, dict), f"options.{name}", kwargs, "must be a mapping of keyword arguments")
        allowed = set(inspect.signature(_filter_class(name).__init__).parameters) - {
            "self",
            "exclusion_writer",
            "language",
        }
        for key in kwargs:
            require(key in allowed, f"options.{name}.{key}", kwargs[key], f"must be one of {sorted(allowed)}")


def _tuples(value: Any) -> Any:
    """YAML lists as the tuples datatrove expects (``top_n_grams: [[2, 0.2], ...]``)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass
class HeuristicFilter:
    """Run the named datatrove filters in order; a document is dropped by the first one that rejects it.

    ``options`` passes keyword arguments to a filter's constructor (``{gopher_quality: {min_doc_words: 9}}``).
    datatrove's C4 filter also removes lines (no terminal punctuation, "javascript", policy lines) from the
    documents it keeps; ``apply_line_edits`` keeps those edited texts (marked ``c4:lines_removed``), otherwise
    kept documents are left exactly as they came.
    """

    filters: list[str] = field(default_factory=lambda: list(DATATROVE_FILTERS))
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    language: str = "eng"
    apply_line_edits: bool = False
    name: str = "heuristic"

    def __post_init__(self) -> None:
        self.filters = [str(f) for f in as_list(self.filters)]
        require(
            len(self.filters) > 0,
            "filters",
            self.filters,
            f"must list one or more of {list(DATATROVE_FILTERS)}",
        )
        for name in self.filters:
            require_choice("filters", name, DATATROVE_FILTERS)
        require(
            len(set(self.filters)) == len(self.filters), "filters", self.filters, "must not repeat a filter"
        )
        self.options = plain(self.options or {})
        require(isinstance(self.options, dict), "options", self.options, "must be a mapping filter -> kwargs")
        _check_options(self.options, self.filters)
        require_nonempty_str("language", self.language)
        require(
            isinstance(self.apply_line_edits, bool),
            "apply_line_edits",
            self.apply_line_edits,
            "must be a bool",
        )
        require_nonempty_str("name", self.name)

    def settings(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "options": self.options,
            "language": self.language,
            "apply_line_edits": self.apply_line_edits,
        }

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transform": "heuristic",
            "version": HEURISTIC_VERSION,
            **self.settings(),
            "libraries": library_versions("datatrove", "spacy"),
        }

    def build_filters(self) -> list[tuple[str, Any]]:
        """(name, datatrove filter) in order, with the word tokenizer loaded up front (and without torch)."""
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        with _torch_hidden():
            load_word_tokenizer(self.language).word_tokenize("warm up")  # spacy is imported on first use
            return [
                (
                    name,
                    _filter_class(name)(
                        language=self.language,
                        **{k: _tuples(v) for k, v in self.options.get(name, {}).items()},
                    ),
                )
                for name in self.filters
            ]

    def judge(self, doc_id: str, text: str, filters: list[tuple[str, Any]]) -> tuple[str | None, str]:
        """(reason it was dropped or None, the text after the filters' own edits)."""
        from datatrove.data import Document

        for name, datatrove_filter in filters:
            doc = Document(text=text, id=doc_id)
            result = datatrove_filter.filter(doc)
            passed, reason = (result, None) if isinstance(result, bool) else (result[0], result[1])
            if not passed:
                return f"{name}:{reason or 'rejected'}", text
            if self.apply_line_edits:
                text = doc.text
        return None, text

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        start = time.perf_counter()
        filters = self.build_filters()
        ids, texts = column(docs, "doc_id"), column(docs, "text")
        keep: list[int] = []
        removed: dict[str, str] = {}
        marked: dict[str, str] = {}
        edited: dict[int, str] = {}
        for i, (doc_id, text) in enumerate(zip(ids, texts, strict=True)):
            reason, new_text = self.judge(doc_id, text, filters)
            if reason is not None:
                removed[doc_id] = reason
                continue
            keep.append(i)
            if new_text != text:
                edited[i] = new_text
                marked[doc_id] = "c4:lines_removed"
        out = self._with_edits(docs, edited, keep)
        stats = {"seconds": round(time.perf_counter() - start, 3), "edited": len(edited)}
        return out, TransformReport(self.name, self.settings(), len(docs), len(out), removed, marked, stats)

    @staticmethod
    def _with_edits(docs: datasets.Dataset, edited: dict[int, str], keep: list[int]) -> datasets.Dataset:
        if not edited:
            return select_rows(docs, keep)
        columns = all_columns(docs)
        columns["text"] = [edited.get(i, t) for i, t in enumerate(columns["text"])]
        return from_columns({name: [values[i] for i in keep] for name, values in columns.items()})


def _meta_value(meta_json: str, key: str) -> Any:
    try:
        return json.loads(meta_json or "{}").get(key)
    except (json.JSONDecodeError, AttributeError):
        return None


@dataclass
class QualityThreshold:
    """Keep documents whose quality value is >= ``threshold``: the ``quality`` column, or the numeric field
    ``meta_field`` of ``meta`` when set (a source that ships its own scores). A document without a value is
    dropped with reason ``quality_missing`` (``missing: drop``) or stops the build (``missing: error``)."""

    threshold: float = 0.5
    meta_field: str | None = None
    missing: str = "drop"
    name: str = "quality_threshold"

    def __post_init__(self) -> None:
        require(
            isinstance(self.threshold, int | float)
            and not isinstance(self.threshold, bool)
            and math.isfinite(self.threshold),
            "threshold",
            self.threshold,
            "must be a finite number",
        )
        if self.meta_field is not None:
            require_nonempty_str("meta_field", self.meta_field)
        require_choice("missing", self.missing, MISSING_POLICIES)
        require_nonempty_str("name", self.name)

    def settings(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold), "meta_field": self.meta_field, "missing": self.missing}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transform": "quality_threshold",
            "version": HEURISTIC_VERSION,
            **self.settings(),
        }

    def values(self, docs: datasets.Dataset) -> list[float | None]:
        """The quality value of each document, None where it has none (or a non-numeric / NaN one)."""
        if self.meta_field is None:
            raw = column(docs, "quality")
        else:
            raw = [_meta_value(m, self.meta_field) for m in column(docs, "meta")]
        return [
            float(v)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
            else None
            for v in raw
        ]

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        ids, values = column(docs, "doc_id"), self.values(docs)
        # the quality column is float32: compare at that precision (0.7 is stored as 0.69999999)
        threshold = float(np.float32(self.threshold)) if self.meta_field is None else float(self.threshold)
        keep: list[int] = []
        removed: dict[str, str] = {}
        for i, (doc_id, value) in enumerate(zip(ids, values, strict=True)):
            if value is None:
                if self.missing == "error":
                    where = "quality" if self.meta_field is None else f"meta.{self.meta_field}"
                    raise DocumentError(f"document {doc_id!r} has no numeric {where} value (missing: error)")
                removed[doc_id] = "quality_missing"
            elif value < threshold:
                removed[doc_id] = "quality_below_threshold"
            else:
                keep.append(i)
        out = select_rows(docs, keep)
        present = [v for v in values if v is not None]
        stats = {
            "with_value": len(present),
            "min": min(present, default=None),
            "max": max(present, default=None),
        }
        return out, TransformReport(self.name, self.settings(), len(docs), len(out), removed, {}, stats)
