"""Run identity: a hash of the resolved config (minus keys that do not change results) and the data manifest.

The id names the run directory, is the W&B run id and the resume key, so a sweep that is started again
finds its finished runs and skips them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

#: Top-level config keys that never change what a run computes (where files go, how it is displayed/logged).
#: (``lr_rule`` sets ``optim.lr``, which is part of the identity; the rule's name is not. ``analysis``: how
#: a study file asks to be analysed.)
NON_IDENTITY_KEYS: frozenset[str] = frozenset(
    {"paths", "logger", "hydra", "run", "launcher", "checkpoint", "lr_rule", "analysis"}
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
