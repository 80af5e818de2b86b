"""The contract between the data stage and training: what a run needs from data preparation (torch-free).

The data stage (:func:`datascale.data.prepare.prepare_data`) writes it; the launcher saves it as
``<run_dir>/data_artifacts.json``; each training rank loads it without importing the data pipeline.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from datascale.storage import atomic_write_json


@dataclass
class DataArtifacts:
    """Paths and hashes of one run's prepared data; JSON on disk (``<run_dir>/data_artifacts.json``)."""

    corpus_hash: str
    """Content hash of the deduplicated corpus."""
    corpus_manifest: str
    """Path of the corpus manifest (versions, document counts and hashes per domain)."""
    tokenizer_path: str
    """tokenizer.json of the study's tokenizer."""
    tokenizer_hash: str
    """sha256 of tokenizer.json."""
    vocab_size: int
    """The tokenizer's vocabulary size (special tokens included)."""
    eos_id: int
    """Id of the end-of-document token that follows every document in the token caches."""
    token_bytes_path: str
    """.npy int32[vocab]: UTF-8 bytes per token (0 for specials), for bits per byte."""
    train_cache: str
    """TokenCache directory of the training pool."""
    eval_caches: dict[str, dict[str, str]]
    """{domain: {"val": dir, "test": dir}}: the held-out sets, fixed per study."""
    subset_manifest: str
    """Path of this run's SubsetManifest JSON."""
    subset_hash: str
    """Hash of the subset manifest (part of the run id)."""
    unique_tokens: int
    """Exact number of unique training tokens in the subset."""
    train_domains: list[str] = field(default_factory=list)
    """Domains present in the training pool (``split.train_domains`` restricts it), sorted."""
    pool_manifest: str = ""
    """Manifest of the transformed training pool (each transform's report); empty without transforms."""
    pool_transforms: list[dict[str, Any]] = field(default_factory=list)
    """Per pool transform: group, name, params, documents in and out, removed per reason."""
    downstream_manifest: str = ""
    """Manifest of the downstream suite built from the held-out documents (tasks.json beside it); "": none."""
    subset_domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per domain of the subset: unique tokens, share of U, pool tokens, repeats (``*``: unstratified)."""
    reference_losses: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """{domain: {"val"|"test": {uniform_nats, unigram_nats, uniform_bpb, unigram_bpb, n_tokens, n_bytes}}}:
    the loss of a uniform prediction (ln V) and the entropy of the held-out set's own token frequencies, in
    nats per token and bits per byte, over the targets evaluation scores
    (:func:`datascale.data.token_cache.reference_losses`); {} in artifacts written before it existed."""

    @property
    def eval_domains(self) -> list[str]:
        """Domains with held-out sets, sorted."""
        return sorted(self.eval_caches)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path | str) -> Path:
        atomic_write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> DataArtifacts:
        data = json.loads(Path(path).read_text())
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = required - set(data)
        if missing:
            raise ValueError(f"{path}: data artifacts lack {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})
