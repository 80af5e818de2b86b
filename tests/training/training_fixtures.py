"""Helpers for training tests: tiny real data (LocalFiles -> prepare_data) and launcher-style resolved
configs.

Two domains of synthetic text with learnable structure, a 320-token BPE, small held-out sets: every stage is
cached in one session directory, so each extra subset size costs only a manifest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from datascale import CONF_DIR
from datascale.artifacts import DataArtifacts
from datascale.data.prepare import prepare_data
from datascale.data.sources import LocalFiles
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.tokenizer import BPETokenizer

WORDS = [
    "the",
    "king",
    "spoke",
    "to",
    "his",
    "loyal",
    "friend",
    "and",
    "the",
    "queen",
    "of",
    "the",
    "north",
    "answered",
    "him",
    "with",
    "a",
    "gentle",
    "song",
    "while",
    "night",
    "fell",
    "over",
    "the",
    "castle",
    "and",
    "the",
    "river",
    "ran",
    "to",
    "the",
    "sea",
]


def _prose(rng: np.random.Generator) -> str:
    sentences = [
        " ".join(rng.choice(WORDS, size=int(rng.integers(5, 12)))).capitalize() + "."
        for _ in range(int(rng.integers(3, 7)))
    ]
    return " ".join(sentences)


def _code(rng: np.random.Generator) -> str:
    lines = []
    for _ in range(int(rng.integers(3, 7))):
        name, a, b = f"f_{int(rng.integers(0, 20))}", int(rng.integers(0, 9)), int(rng.integers(0, 9))
        lines.append(f"def {name}(x, y={a}):\n    return x * {b} + y\n")
    return "\n".join(lines)


def write_corpus(root: Path) -> Path:
    """220 short documents, alternating prose and code, as one JSONL file with a domain column."""
    rng = np.random.default_rng(0)
    path = root / "docs.jsonl"
    with open(path, "w") as fh:
        for i in range(220):
            domain = "prose" if i % 2 else "code"
            text = _prose(rng) if domain == "prose" else _code(rng)
            fh.write(json.dumps({"text": text, "domain": domain}) + "\n")
    return path


def tiny_artifacts(corpus: Path, cache: Path, unique_tokens: int) -> DataArtifacts:
    return prepare_data(
        LocalFiles(paths=[str(corpus)], domain_field="domain"),
        HeldoutSplit(seed=0, eval_bytes_per_domain=3000),
        BPETokenizer(vocab_size=320),
        SizeSubset(unique_tokens=unique_tokens),
        cache_dir=cache,
        progress=False,
    )


#: Test-sized protocol: 8 x 32-token sequences per step; 2 KB-token subsets take 8 steps per epoch. The tiny
#: held-out sets (32 windows per domain) measure a change to about 0.01 nats: a 0.02 target keeps about a
#: quarter of their windows after the second evaluation, so every training test also covers that choice.
TINY_TRAINING = {
    "batch_tokens": 256,
    "eval_every_epochs": 1.0,
    "min_eval_interval_tokens": 512,
    "cap_epochs": 6.0,
    "patience": 2,
    "warmup_tokens": 1024,
    "eval_tokens_per_domain": 1024,
    "eval_se_target": 0.02,
    "eval_batch_sequences": 16,
}


def resolved_config(
    run_dir: Path, artifacts: DataArtifacts, seed: int = 0, logger: str = "csv", **overrides: Any
) -> Path:
    """Write ``run_dir/resolved.yaml`` the way the launcher does, from this project's config files."""
    run_dir.mkdir(parents=True, exist_ok=True)
    artifacts_path = artifacts.save(run_dir / "data_artifacts.json")

    def group(name: str, option: str) -> Any:
        return OmegaConf.to_container(OmegaConf.load(CONF_DIR / name / f"{option}.yaml"))

    model = group("model", "gpt_tiny") | {"vocab_size": artifacts.vocab_size, "seq_len": 32}
    cfg: dict[str, Any] = {
        "study": {"name": "tests", "axes": ["subset.unique_tokens", "seed"]},
        "seed": seed,
        "subset": {"unique_tokens": artifacts.unique_tokens},
        "tokenizer": {"vocab_size": artifacts.vocab_size},
        "model": model,
        "optim": group("optim", "adamw") | {"lr": 1e-2},
        "schedule": group("schedule", "warmup_cosine"),
        "training": group("training", "early_stop") | TINY_TRAINING,
        "trainer": group("trainer", "default")
        | {"deterministic": True, "enable_progress_bar": False, "log_every_n_steps": 1},
        "strategy": group("strategy", "single"),
        "worker": group("worker", "default"),
        "logger": group("logger", logger),
        "run": {
            "id": run_dir.name,
            "dir": str(run_dir),
            "data_artifacts": str(artifacts_path),
            "axes": {"unique_tokens": artifacts.unique_tokens, "seed": seed},
        },
    }
    conf = OmegaConf.create(cfg)
    for key, value in overrides.items():
        OmegaConf.update(conf, key, value, merge=False)
    path = run_dir / "resolved.yaml"
    OmegaConf.save(conf, path)
    return path
