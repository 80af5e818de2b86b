"""The study's law is chosen by the tournament decided in advance: held-out losses cannot move the choice
(only the held-out errors, reported as not used for it), a named law stays the headline with the tournament
beside it, and the report shows the seed-noise floor beside the held-out error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scaling_analysis import study
from scaling_analysis.engine.compare import NOT_USED
from scaling_analysis.engine.laws import get_law
from scaling_analysis.report.fitjson import HELD_OUT_KEY
from scaling_analysis.report.markdown import HELD_OUT_MAPE

SHIFTED = {"E": 2.0, "B": 2000.0, "beta": 0.8, "U0": 3e4}
CANDIDATES = ("saturating_power_D", "shifted_power_U")
FAST: dict[str, Any] = {"n_resamples": 0, "n_jobs": 1, "candidates": CANDIDATES}


def _frame(seed: int = 0) -> pd.DataFrame:
    """8 sizes 4k..512k, 3 seeds each, loss from a shifted power law (it bends: a saturating law misses)."""
    law = get_law("shifted_power_U")
    U = np.repeat(4000 * 2.0 ** np.arange(8), 3)
    noise = np.exp(np.random.default_rng(seed).normal(0, 0.002, U.size))
    return pd.DataFrame(
        {"U": U, "loss": law.predict(SHIFTED, {"U": U}) * noise, "seed": np.tile([0, 1, 2], 8)}
    )


def _choice(fj: dict) -> tuple[str, str, dict[str, float]]:
    t = fj["tournament"]
    return t["chosen"], fj["law"], {r["law"]: r["rule_score"] for r in t["laws"]}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> study.StudyAnalysis:
    return study.analyze_frame(_frame(), tmp_path_factory.mktemp("base"), **{**FAST, "n_resamples": 30})


def test_the_tournament_chooses_the_headline_law(base: study.StudyAnalysis) -> None:
    fj = base.fit_json
    t = fj["tournament"]
    assert t["chosen"] == "shifted_power_U" == fj["law"] == base.fit.law, t["reason"]
    assert t["headline"]["source"] == "tournament" and t["n_held_out_rows"] == 3 and t["n_fitting_rows"] == 21
    assert "Rule" in t["rule"] and {r["law"] for r in t["laws"]} == set(CANDIDATES)
    chosen = next(r for r in t["laws"] if r["chosen"])
    assert set(chosen["params"]) == {"E", "B", "beta", "U0"}
    # the held-out check is that of the chosen law, fitted on the same fitting points as the tournament
    assert fj["holdout"]["mape"] == pytest.approx(chosen[HELD_OUT_KEY]["mape"], rel=1e-3)
    assert NOT_USED in HELD_OUT_KEY
    md = base.report
    assert "## Law choice: a tournament decided in advance" in md and HELD_OUT_MAPE in md
    assert "**Why this law:** no law was named" in md


def test_perturbed_held_out_losses_do_not_move_the_choice(base: study.StudyAnalysis, tmp_path: Path) -> None:
    df = _frame()
    held = (df["U"] == df["U"].max()).to_numpy()
    sat = next(r for r in base.fit_json["tournament"]["laws"] if r["law"] == "saturating_power_D")
    # adversarial: the held-out losses become what the saturating law predicts, so a choice by held-out error
    # (the old comparison step) would flip to it
    perturbed = df.copy()
    perturbed.loc[held, "loss"] = get_law("saturating_power_D").predict(sat["params"], {"D": df["U"][held]})
    other = study.analyze_frame(perturbed, tmp_path, **FAST)
    assert _choice(other.fit_json) == _choice(base.fit_json)  # chosen, headline law, every rule score
    errors = {r["law"]: r[HELD_OUT_KEY]["mape"] for r in other.fit_json["tournament"]["laws"]}
    assert errors != {r["law"]: r[HELD_OUT_KEY]["mape"] for r in base.fit_json["tournament"]["laws"]}
    assert min(errors, key=errors.__getitem__) == "saturating_power_D"  # held-out error would have chosen it
    assert other.fit_json["holdout"]["mape"] > 3 * base.fit_json["holdout"]["mape"]  # and it is reported


def test_a_named_law_stays_the_headline(tmp_path: Path) -> None:
    res = study.analyze_frame(_frame(), tmp_path, law="saturating_power_D", **FAST)
    fj = res.fit_json
    assert fj["law"] == "saturating_power_D" and fj["tournament"]["chosen"] == "shifted_power_U"
    assert fj["tournament"]["headline"]["source"] == "named"
    assert "the tournament, decided in advance, chose `shifted_power_U`" in res.report


def test_seed_noise_floor_beside_the_held_out_error(base: study.StudyAnalysis) -> None:
    noise = base.fit_json["seed_noise"]
    assert noise["cells"] == ["U"] and len(noise["rows"]) == 8 and all(r["n"] == 3 for r in noise["rows"])
    assert 0.0005 < noise["floor"] < 0.005  # 0.2% log-normal noise
    assert (
        noise["held_out_vs_floor"].startswith("held-out error ")
        and " vs seed floor " in noise["held_out_vs_floor"]
    )
    assert "## Seed noise" in base.report and noise["held_out_vs_floor"] in base.report
    # 3 runs in every cell: the bootstrap draws runs within cells, and the report says so
    assert base.fit_json["bootstrap"]["resampled"] == "runs within cells"
    assert "each drawing runs within cells" in base.report
