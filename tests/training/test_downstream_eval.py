"""Downstream evaluation: fine-tuning beats chance on an easy task, zero-shot scores are log-likelihoods, and
an MLM run with the suite records its objective and downstream results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_fixtures import TINY_TRAINING, _code, _prose, resolved_config

from datascale.data.downstream import DownstreamSuite
from datascale.data.prepare import prepare_data
from datascale.data.sources import LocalFiles
from datascale.data.splits import HeldoutSplit
from datascale.data.subsets import SizeSubset
from datascale.data.tokenizer import BPETokenizer
from datascale.model import GPT, GPTConfig
from datascale.records import RunRecord, read_record
from datascale.training import worker
from datascale.training.downstream_eval import option_scores_clm, score_multiple_choice
from datascale.training.finetune import finetune_classifier, macro_f1
from datascale.training.objective import FinetuneBudget

TINY = GPTConfig(vocab_size=128, seq_len=64, n_layer=1, n_head=2, d_model=32, dropout=0.0, bias=False)


def _encode(text: str) -> list[int]:
    return [ord(c) % 128 for c in text]


def _easy_task() -> dict[str, list[dict]]:
    """Prose against code: separable from the characters alone (chance 0.5)."""
    rng = np.random.default_rng(0)
    examples = [
        {"text": (_prose(rng) if i % 2 else _code(rng))[:64], "label": "prose" if i % 2 else "code"}
        for i in range(160)
    ]
    return {"train": examples[:100], "val": examples[100:130], "test": examples[130:]}


@pytest.mark.parametrize("mode", ["probe", pytest.param("finetune", marks=pytest.mark.slow)])
def test_finetuning_a_tiny_model_beats_chance_on_an_easy_task(mode: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    budget = FinetuneBudget(max_steps=60, eval_every=10, batch_size=16, lr_probe=1e-2, lr_finetune=3e-3)
    backbone = GPT(TINY)
    before = [p.clone() for p in backbone.parameters()]
    result = finetune_classifier(
        backbone,
        "easy",
        _easy_task(),
        ["code", "prose"],
        mode,
        budget,
        _encode,
        torch.device("cpu"),
        tmp_path,
    )
    assert result.chance == 0.5 and result.n_test == 30
    assert result.accuracy >= 0.85, result  # chance is 0.5
    assert result.macro_f1 >= 0.8 and result.loss < np.log(2)
    assert 0 < result.steps <= 60
    assert all(torch.equal(a, b) for a, b in zip(before, backbone.parameters(), strict=True))  # a copy


def test_macro_f1_averages_per_class_f1() -> None:
    # class 0: tp 1, fp 1, fn 0 -> 2/3; class 1: tp 1, fp 0, fn 1 -> 2/3; class 2: tp 1 -> 1
    assert macro_f1([0, 0, 1, 2], [0, 1, 1, 2], 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_clm_option_scores_are_summed_log_likelihoods() -> None:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    context, options = [5, 6, 7, 8], [[9, 10], [11, 12, 13]]
    with torch.no_grad():
        scores = option_scores_clm(model, context, options)
        for option, score in zip(options, scores, strict=True):
            ids = torch.tensor([context + option])
            logp = torch.log_softmax(model(ids[:, :-1]), -1)[0]
            manual = sum(logp[len(context) - 1 + k, tok] for k, tok in enumerate(option))
            assert float(score) == pytest.approx(float(manual), abs=1e-4)


def test_multiple_choice_picks_the_most_likely_option() -> None:
    """A model that loves token 3 picks the all-3 option, whatever its position."""
    model = GPT(TINY).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: embeddings zero, so logits come from nothing but ...
        model.lm_head.weight[3] = 1.0  # ... token 3's row against a non-zero hidden state
    items = [{"context": "ab", "options": ["xy", "\x03\x03", "zz", "qq"], "answer": 1}] * 2
    items += [{"context": "ab", "options": ["\x03\x03", "xy", "zz", "qq"], "answer": 0}]
    result = score_multiple_choice(model, "continue/x", items, _encode, None)
    assert result.mode == "zeroshot" and result.chance == 0.25
    assert result.accuracy == pytest.approx(1.0)


@pytest.mark.slow
def test_mlm_run_with_the_suite_records_objective_and_downstream(corpus_files: Path, tmp_path: Path) -> None:
    art = prepare_data(
        LocalFiles(paths=[str(corpus_files)], domain_field="domain"),
        HeldoutSplit(seed=0, eval_bytes_per_domain=3000),
        BPETokenizer(vocab_size=320, mask_token="<|mask|>"),
        SizeSubset(unique_tokens=2048),
        cache_dir=tmp_path / "cache",
        progress=False,
        downstream=DownstreamSuite(passage_chars=120, span_chars=30, min_per_label=2),
    )
    assert art.downstream_manifest
    overrides = {
        "objective": {"_target_": "datascale.training.objective.Objective", "name": "mlm"},
        "tokenizer": {"vocab_size": art.vocab_size, "mask_token": "<|mask|>"},
        "downstream": {"_target_": "datascale.data.downstream.DownstreamSuite", "enabled": True},
        "finetune": {"_target_": "datascale.training.objective.FinetuneBudget", "max_items": 20},
        "training": TINY_TRAINING | {"_target_": "datascale.training.protocol.TrainingProtocol"},
    }
    run_dir = tmp_path / "run_mlm"
    record = worker.run(resolved_config(run_dir, art, **overrides))
    assert record.objective == "mlm" and "masked token" in record.loss_unit
    tasks = json.loads(Path(art.downstream_manifest).read_text())["tasks"]
    continuation = [t for t in tasks if t.startswith("continue/")]
    assert continuation and all(f"{t}@pseudo" in record.downstream for t in continuation)
    for result in record.downstream.values():
        assert 0 <= result["accuracy"] <= 1 and result["chance"] == 0.25
    assert RunRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert read_record(run_dir / "record.json") == record
