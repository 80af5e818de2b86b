"""Run identity: a hash of the resolved config (minus keys that do not change results) and the data manifest.

The id names the run directory, is the W&B run id and the resume key, so a sweep that is started again
finds its finished runs and skips them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

#: Top-level config keys that never change what a run computes (where files go, how it is displayed/logged).
#: (``lr_rule`` sets ``optim.lr``, which is part of the identity; the rule's name is not. ``analysis``: how
#: a study file asks to be analysed. ``data_executor``: where the pool is tokenised, not into what.)
NON_IDENTITY_KEYS: frozenset[str] = frozenset(
    {"paths", "logger", "hydra", "run", "launcher", "checkpoint", "lr_rule", "analysis", "data_executor"}
)
#: Dotted keys below the top level that never change what a run computes.
NON_IDENTITY_DOTTED: frozenset[str] = frozenset(
    {
        "trainer.enable_progress_bar",
        "worker.progress_bar",
        "worker.progress_refresh_rate",
        "worker.num_threads",  # how many cores a run uses, not what it computes (datascale.packing)
        "worker.adaptive_threads",
        "worker.preload",  # how the worker process starts (a fork of a preloaded parent or a fresh one)
        "trainer.log_every_n_steps",
        "data.num_workers",
        "study.max_attempts",
        "study.lock_lease_s",
        # data-stage settings that change a run's data only through the data itself (the tokenizer's sample,
        # the records kept), so through the subset manifest hash, which is part of the identity
        "tokenizer.train_sample_bytes",
        "tokenizer.sample_seed",
        "source.on_bad_record",
    }
)
RUN_ID_LENGTH = 12


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used for every hash in the project."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_hex(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def identity_view(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that determines a run's result."""
    view = {k: v for k, v in resolved.items() if k not in NON_IDENTITY_KEYS}
    for dotted in NON_IDENTITY_DOTTED:
        head, _, leaf = dotted.partition(".")
        node = view.get(head)
        if isinstance(node, Mapping) and leaf in node:
            view[head] = {k: v for k, v in node.items() if k != leaf}
    return view


def run_identity(resolved: Mapping[str, Any], subset_hash: str) -> str:
    """``sha256(canonical identity view + subset manifest hash)[:12]``."""
    payload = canonical_json({"config": identity_view(resolved), "subset_hash": subset_hash})
    return sha256_hex(payload)[:RUN_ID_LENGTH]


def protocol_view(resolved: Mapping[str, Any], axes: Iterable[str] = ()) -> dict[str, Any]:
    """The identity view less the study's ``axes`` (dotted keys) and the seed: what every run trained under
    one protocol shares, whatever its point of the grid (``protocol_hash``)."""
    view = copy.deepcopy(identity_view(resolved))
    for dotted in [*axes, "seed"]:
        *parents, leaf = dotted.split(".")
        node: Any = view
        for key in parents:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return view


def protocol_hash(resolved: Mapping[str, Any], axes: Iterable[str] = ()) -> str:
    """``sha256(canonical protocol view)[:12]``: runs of one study folder with different hashes were trained
    under different protocols (a changed default, an override) and are not points of one curve."""
    return sha256_hex(canonical_json(protocol_view(resolved, axes)))[:RUN_ID_LENGTH]


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (a key missing on one side differs)."""
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return [] if canonical_json(a) == canonical_json(b) else [prefix or "(root)"]
    out: list[str] = []
    for key in sorted(set(a) | set(b), key=str):
        out += differing_keys(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
    return out
