"""A joint N x D study analysed as its study file asks: the Chinchilla fit, compute-optimal N and D at the
named budgets with bootstrap intervals, and the regime (data- or model-limited) of every run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scaling_analysis import cli
from synthetic_study import write_synthetic_study

from datascale.records import read_record, write_record

TRUTH = {"E": 1.8, "A": 60.0, "alpha": 0.35, "B": 300.0, "beta": 0.4}
SIZES_N = (50_000, 200_000, 800_000)
SIZES_U = (50_000, 200_000, 800_000, 3_200_000)


def loss(n: float, d: float) -> float:
    return TRUTH["E"] + TRUTH["A"] / n ** TRUTH["alpha"] + TRUTH["B"] / d ** TRUTH["beta"]


@pytest.fixture(scope="module")
def joint_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic records of 3 model sizes x 4 data sizes whose config carries the joint_nd analysis block."""
    base, root = tmp_path_factory.mktemp("base"), tmp_path_factory.mktemp("joint") / "joint_nd"
    templates = {read_record(p).unique_tokens: read_record(p) for p in write_synthetic_study(
        base, sizes=SIZES_U, seeds=(0,))}  # fmt: skip
    rng = np.random.default_rng(0)
    for depth, n in enumerate(SIZES_N, start=1):
        for u, template in templates.items():
            tokens = 20 * u  # D = tokens seen (what the Chinchilla law is fitted against): 20 epochs
            value = loss(n, tokens) * float(np.exp(rng.normal(0, 0.003)))
            config = {**template.config, "analysis": {"law": "chinchilla", "budgets": [1.0e13]}}
            record = dataclasses.replace(
                template, run_id=f"d{depth}u{u}", study="joint_nd", axes={"depth": depth, "unique_tokens": u},
                params_total=n, params_non_embedding=n, test_loss=value, best_val_loss=value, config=config,
                tokens_seen=tokens, epochs=20.0,
            )  # fmt: skip
            (root / "runs" / record.run_id).mkdir(parents=True)
            write_record(root / "runs" / record.run_id, record)
    return root


def test_the_study_file_chooses_the_law_and_budget_and_the_report_gives_regimes(joint_study: Path) -> None:
    assert cli.main([str(joint_study), "--resamples", "40", "--jobs", "1"]) == 0
    fit = json.loads((joint_study / "fit.json").read_text())
    assert fit["law"] == "chinchilla"
    for name in ("alpha", "beta"):
        assert fit["params"][name] == pytest.approx(TRUTH[name], rel=0.15)
    n_opt = fit["derived"]["N_opt@C=1e+13"]
    low, high = n_opt["interval"]
    assert low < n_opt["value"] < high
    runs = {r["run_id"]: r for r in fit["regimes"]["runs"]}
    # smallest model on the most data: the model term dominates; the largest model on the least data: data
    assert runs[f"d1u{SIZES_U[-1]}"]["regime"] == "model-limited"
    assert runs[f"d3u{SIZES_U[0]}"]["regime"] == "data-limited"
    report = (joint_study / "report.md").read_text()
    assert "## Regime of each run" in report and "data-limited" in report
