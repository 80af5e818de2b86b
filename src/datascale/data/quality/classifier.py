"""Model-based quality selection in the DCLM manner (Hydra ``select`` group): score, then keep the top q.

DCLM (Li et al. 2024) trains a fastText classifier on reference text it wants more of (instruction data,
ELI5) as positives against random pool documents as negatives, scores the whole pool, and keeps the top 10%.
Here the classifier is a hashed word-n-gram logistic regression (scikit-learn: fastText wheels fail with
numpy 2), and the reference is either a domain of the pool (``reference_domain: literature``: "more text
like this") or local text files. Every pool document is scored by the same classifier, and the kept set is
the top ``round(q * n)`` by score with ties broken by doc id, so the top 10% is a subset of the top 20%
(nested quality levels, like the nested sizes of a study).

Reference-domain documents are in the pool and were positives, so they are scored by a classifier that saw
them and rank at the top: that is the DCLM manner, where the selection is "the pool as seen by the reference"
(``reference_docs: rank``). ``reference_docs: keep`` instead keeps every reference-domain document and spends
the q budget on the other documents only ("which other documents look like the reference").
"""

from __future__ import annotations

import glob
import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from datascale.config_errors import ConfigError, require, require_choice
from datascale.data.chunking import BLANK_LINE, document_chunks
from datascale.data.documents import column
from datascale.data.quality.base import (
    all_columns,
    as_list,
    from_columns,
    is_int,
    library_versions,
    require_nonempty_str,
    require_seed,
    select_rows,
)
from datascale.data.quality.degrade import selected_count
from datascale.data.transforms import TransformReport

CLASSIFIER_VERSION = 1
REFERENCE_DOCS = ("rank", "keep")
REFERENCE_CHUNK_BYTES = (
    4096  # reference files are cut at blank lines into pieces about the size of a document
)
BELOW = "top_q:below_threshold"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class ClassifierTopQ:
    """Train a reference-vs-pool classifier, score every pool document, keep the top ``q`` fraction.

    Positives: the pool's ``reference_domain`` documents, or the files matched by ``reference_paths`` (cut at
    blank lines), at most ``max_reference_docs`` (a seeded sample). Negatives: ``negatives_per_positive``
    times as many pool documents drawn with ``seed`` (outside the reference domain). With ``write_scores``
    the kept documents' ``quality`` column holds their score (any source-provided value is replaced).
    """

    q: float = 0.2
    reference_domain: str | None = None
    reference_paths: list[str] = field(default_factory=list)
    reference_docs: str = "rank"
    negatives_per_positive: float = 1.0
    max_reference_docs: int = 5000
    n_features: int = 2**18
    ngram_max: int = 2
    regularization: float = 1.0
    seed: int = 0
    write_scores: bool = True
    name: str = "top_q"

    def __post_init__(self) -> None:
        self.reference_paths = [str(p) for p in as_list(self.reference_paths)]
        require(
            _is_number(self.q) and 0 < self.q <= 1,
            "q",
            self.q,
            "must be a number in (0, 1]: the fraction kept",
        )
        self._check_reference()
        require(
            _is_number(self.negatives_per_positive) and self.negatives_per_positive > 0,
            "negatives_per_positive",
            self.negatives_per_positive,
            "must be a positive number",
        )
        for name, low in (("max_reference_docs", 1), ("n_features", 2**10), ("ngram_max", 1)):
            value = getattr(self, name)
            require(is_int(value) and value >= low, name, value, f"must be an integer >= {low}")
        require(
            _is_number(self.regularization) and self.regularization > 0,
            "regularization",
            self.regularization,
            "must be a positive number (logistic regression C: smaller is stronger regularisation)",
        )
        require_seed(self.seed)
        require(isinstance(self.write_scores, bool), "write_scores", self.write_scores, "must be a bool")
        require_nonempty_str("name", self.name)

    def _check_reference(self) -> None:
        require(
            (self.reference_domain is None) != (not self.reference_paths),
            "reference_domain",
            self.reference_domain,
            "set exactly one of reference_domain (a pool domain) and reference_paths (text file globs)",
        )
        if self.reference_domain is not None:
            require_nonempty_str("reference_domain", self.reference_domain)
        require_choice("reference_docs", self.reference_docs, REFERENCE_DOCS)
        require(
            self.reference_docs == "rank" or self.reference_domain is not None,
            "reference_docs",
            self.reference_docs,
            "'keep' needs reference_domain (reference files are not in the pool)",
        )
        if self.reference_paths:
            self.reference_files()  # fail fast: globs that match nothing

    def reference_files(self) -> list[Path]:
        """Matched reference files, sorted and de-duplicated."""
        found = {
            Path(p).resolve()
            for pattern in self.reference_paths
            for p in glob.glob(os.path.expanduser(pattern), recursive=True)
            if Path(p).is_file()
        }
        if not found:
            raise ConfigError("reference_paths", self.reference_paths, "globs match no files")
        return sorted(found)

    def settings(self) -> dict[str, Any]:
        return {
            "q": float(self.q),
            "reference_domain": self.reference_domain,
            "reference_paths": self.reference_paths,
            "reference_docs": self.reference_docs,
            "negatives_per_positive": float(self.negatives_per_positive),
            "max_reference_docs": self.max_reference_docs,
            "n_features": self.n_features,
            "ngram_max": self.ngram_max,
            "regularization": float(self.regularization),
            "seed": self.seed,
            "write_scores": self.write_scores,
        }

    def fingerprint(self) -> dict[str, Any]:
        files = [
            (p.name, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in (self.reference_files() if self.reference_paths else [])
        ]
        settings = {
            k: v for k, v in self.settings().items() if k != "reference_paths"
        }  # files are the identity
        return {
            "name": self.name,
            "transform": "classifier_top_q",
            "version": CLASSIFIER_VERSION,
            **settings,
            "reference_files": files,
            "libraries": library_versions("scikit-learn", "numpy"),
        }

    # ------------------------------------------------------------------------------------------ training

    def reference_texts(self) -> list[str]:
        """The reference files cut into document-sized pieces (files in sorted path order)."""
        texts: list[str] = []
        for path in self.reference_files():
            text = path.read_text(encoding="utf-8")
            texts.extend(document_chunks(text, REFERENCE_CHUNK_BYTES, [BLANK_LINE]))
        return texts

    def training_set(self, texts: list[str], domains: list[str]) -> tuple[list[str], np.ndarray]:
        """(texts, labels): the positives (capped by a seeded sample) then the sampled pool negatives."""
        rng = np.random.default_rng(self.seed)
        if self.reference_domain is not None:
            if self.reference_domain not in domains:
                raise ConfigError(
                    "reference_domain",
                    self.reference_domain,
                    f"must be a domain of the pool {sorted(set(domains))}",
                )
            positives = [t for t, d in zip(texts, domains, strict=True) if d == self.reference_domain]
            candidates = [i for i, d in enumerate(domains) if d != self.reference_domain]
        else:
            positives = self.reference_texts()
            candidates = list(range(len(texts)))
        if len(positives) > self.max_reference_docs:
            picked = np.sort(rng.choice(len(positives), size=self.max_reference_docs, replace=False))
            positives = [positives[i] for i in picked]
        n_neg = min(len(candidates), max(1, int(self.negatives_per_positive * len(positives) + 0.5)))
        if not positives or n_neg == 0:
            raise ConfigError(
                "reference_domain" if self.reference_domain else "reference_paths",
                self.reference_domain or self.reference_paths,
                f"needs reference and pool documents to train on; got {len(positives)} and {len(candidates)}",
            )
        negatives = [
            texts[candidates[i]] for i in np.sort(rng.choice(len(candidates), size=n_neg, replace=False))
        ]
        labels = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.int64)
        return positives + negatives, labels

    def score(self, texts: list[str], domains: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
        """P(reference | text) for every pool text, and training statistics."""
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.linear_model import LogisticRegression

        vectorizer = HashingVectorizer(
            n_features=self.n_features, ngram_range=(1, self.ngram_max), alternate_sign=False, norm="l2"
        )
        train_texts, labels = self.training_set(texts, domains)
        model = LogisticRegression(
            C=float(self.regularization), solver="liblinear", max_iter=1000, random_state=self.seed
        )
        features = vectorizer.transform(train_texts)
        model.fit(features, labels)
        scores = model.predict_proba(vectorizer.transform(texts))[:, 1] if texts else np.array([])
        train_accuracy = float(model.score(features, labels))
        info = {"positives": int(labels.sum()), "negatives": int(len(labels) - labels.sum())}
        return scores, {**info, "train_accuracy": round(train_accuracy, 4)}

    # ------------------------------------------------------------------------------------------ selection

    def ranked_keep(self, ids: list[str], domains: list[str], scores: np.ndarray) -> list[int]:
        """Row indices kept: the top round(q * n) of the ranked documents by (score desc, doc id), plus every
        reference-domain document under ``reference_docs: keep``; in pool order."""
        always = [
            i for i, d in enumerate(domains) if self.reference_docs == "keep" and d == self.reference_domain
        ]
        fixed = set(always)
        ranked = sorted((i for i in range(len(ids)) if i not in fixed), key=lambda i: (-scores[i], ids[i]))
        return sorted(always + ranked[: selected_count(self.q, len(ranked))])

    def apply(self, docs: datasets.Dataset) -> tuple[datasets.Dataset, TransformReport]:
        start = time.perf_counter()
        ids, domains, texts = column(docs, "doc_id"), column(docs, "domain"), column(docs, "text")
        scores, info = self.score(texts, domains)
        keep = self.ranked_keep(ids, domains, scores)
        kept = set(keep)
        removed = {ids[i]: BELOW for i in range(len(ids)) if i not in kept}
        if self.write_scores:
            columns = all_columns(docs)
            columns["quality"] = [float(s) for s in scores]
            out = from_columns({name: [values[i] for i in keep] for name, values in columns.items()})
        else:
            out = select_rows(docs, keep)
        stats = {**info, **self.score_stats(domains, scores, keep)}
        stats["seconds"] = round(time.perf_counter() - start, 3)
        return out, TransformReport(self.name, self.settings(), len(docs), len(out), removed, {}, stats)

    def score_stats(self, domains: list[str], scores: np.ndarray, keep: list[int]) -> dict[str, Any]:
        """The score threshold (lowest kept score among ranked documents), quantiles, per-domain means and
        kept counts."""
        if len(scores) == 0:
            return {"threshold": None, "kept_by_domain": {}}
        ranked_kept = [
            i for i in keep if not (self.reference_docs == "keep" and domains[i] == self.reference_domain)
        ]
        quantiles = np.quantile(scores, [0.0, 0.1, 0.5, 0.9, 1.0])
        by_domain = {
            d: round(float(np.mean([s for s, dd in zip(scores, domains, strict=True) if dd == d])), 6)
            for d in sorted(set(domains))
        }
        return {
            "threshold": float(min(scores[i] for i in ranked_kept)) if ranked_kept else None,
            "score_mean": round(float(np.mean(scores)), 6),
            "score_quantiles": dict(
                zip(("min", "p10", "median", "p90", "max"), map(float, quantiles), strict=True)
            ),
            "score_mean_by_domain": by_domain,
            "kept_by_domain": dict(sorted(Counter(domains[i] for i in keep).items())),
        }
