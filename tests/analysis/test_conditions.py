"""Condition studies: labels and reference, the effective-data multiplier k, decision accuracy, the domain
matrix, mixtures against parts, the data mixing law (synthetic recovery and Ye et al.'s published runs), pool
transform precision/recall, and the report sections of ``analyze_frame`` (present only when there are
conditions)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scaling_analysis import study
from scaling_analysis.steps.conditions.decision import decision_accuracy
from scaling_analysis.steps.conditions.effective import fit_effective_data, multiplier_rows
from scaling_analysis.steps.conditions.labels import find_conditions, with_condition
from scaling_analysis.steps.conditions.mixing import (
    best_mixture,
    fit_mixing_law,
    fit_mixing_laws,
    mixture_matrix,
)
from scaling_analysis.steps.conditions.pool_quality import pool_transform_fields, precision_recall
from scaling_analysis.steps.conditions.sections import condition_sections, console_lines
from scaling_analysis.steps.conditions.snr import NO_REPEATS, condition_snr
from scaling_analysis.steps.conditions.transfer import domain_matrix, mixtures_vs_parts
from scaling_analysis.tables.runs import load_records
from synthetic_study import synthetic_record, write_synthetic_study

from datascale.records import write_record

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
CONDITION_HEADINGS = ("## Conditions", "## Effective data", "## Decision accuracy", "## Data mixing law")


# ------------------------------------------------------------------------------------------ conditions


def test_labels_are_readable_and_the_reference_is_the_clean_condition():
    noise = pd.DataFrame(
        {
            "axis_fraction": [0.25, 0.0, 0.5, 0.0],
            "axis_filter": ["c4", "none", "c4", "c4"],
            "axis_unique_tokens": [1, 1, 2, 2],
            "axis_seed": [0, 0, 0, 0],
        }
    )
    conds = find_conditions(noise)
    assert conds is not None and conds.axes == ["fraction", "filter"]
    assert conds.labels.tolist()[0] == "fraction=0.25 filter=c4"
    assert conds.reference == "fraction=0 filter=none"
    assert conds.levels[0].startswith("fraction=0 ")  # numeric order: 0 < 0.25 < 0.5
    quality = pd.DataFrame({"axis_q": [0.3, 0.6, 1.0], "axis_seed": [0, 0, 0]})
    assert find_conditions(quality).reference == "q=1"
    mix = pd.DataFrame(
        {"axis_weights": [{"literature": 0.5, "code": 0.5}, {"literature": 1.0, "code": None}]}
    )
    assert find_conditions(mix).labels.tolist() == ["literature=0.5,code=0.5", "literature=1"]
    plain = pd.DataFrame({"axis_unique_tokens": [1, 2], "axis_seed": [0, 0]})
    assert find_conditions(plain) is None


# -------------------------------------------------------------------------------------- effective data

TRUE_E, TRUE_B, TRUE_BETA, TRUE_K = 2.0, 60.0, 0.35, 2.5


def _quality_table(noise: float = 0.004, seeds: int = 3, rng_seed: int = 1) -> pd.DataFrame:
    """q=1 (reference) and q=0.3, whose tokens are worth TRUE_K reference tokens, at five sizes."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for q, k in ((1.0, 1.0), (0.3, TRUE_K)):
        for u in (2_000, 4_000, 8_000, 16_000, 32_000):
            for seed in range(seeds):
                clean = TRUE_E + TRUE_B * (k * u) ** -TRUE_BETA
                loss = clean * float(np.exp(rng.normal(0, noise)))
                rows.append({"run_id": f"q{q}-{u}-{seed}", "axis_q": q, "axis_unique_tokens": u,
                             "axis_seed": seed, "U": u, "seed": seed, "loss": loss})  # fmt: skip
    return pd.DataFrame(rows)


def test_effective_data_fit_recovers_a_known_multiplier_with_an_interval_containing_it():
    df = _quality_table()
    conds = find_conditions(df)
    result = fit_effective_data(with_condition(df, conds), conds, n_resamples=300, seed=0, n_jobs=1)
    rows = {r["condition"]: r for r in multiplier_rows(result)}
    assert rows["q=1"]["reference"] and rows["q=1"]["k"] == 1.0
    k, (lo, hi) = rows["q=0.3"]["k"], rows["q=0.3"]["interval"]
    assert k == pytest.approx(TRUE_K, rel=0.05)
    assert lo < TRUE_K < hi and hi / lo < 1.3, (k, lo, hi)
    assert result.fit.params["beta"] == pytest.approx(TRUE_BETA, rel=0.1)
    assert "worth 2.5" in rows["q=0.3"]["sentence"] or "worth 2.4" in rows["q=0.3"]["sentence"]


# ------------------------------------------------------------------------------------ decision accuracy


def _decision_table() -> pd.DataFrame:
    """Three conditions at sizes 1, 2, 4 and 8, two seeds. At 8 (target): a < b < c. At 4 the same order;
    at 2, b and c swap (2 of 3 pairs right); at 1 the order is reversed (0 of 3)."""
    means = {
        1: {"a": 3.0, "b": 2.9, "c": 2.8},
        2: {"a": 2.5, "b": 2.7, "c": 2.6},
        4: {"a": 2.0, "b": 2.1, "c": 2.2},
        8: {"a": 1.5, "b": 1.6, "c": 1.7},
    }
    rows = []
    for u, per in means.items():
        for cond, m in per.items():
            for seed, eps in ((0, -0.01), (1, 0.01)):
                rows.append({"condition": cond, "U": u, "seed": seed, "loss": m + eps})
    return pd.DataFrame(rows)


def test_decision_accuracy_on_a_hand_made_table():
    out = decision_accuracy(_decision_table())
    assert out["target_size"] == 8 and out["several_seeds"] and out["n_conditions"] == 3
    acc = {r["U"]: r["accuracy"] for r in out["rows"]}
    assert acc == {1: 0.0, 2: pytest.approx(2 / 3), 4: 1.0}
    row4 = next(r for r in out["rows"] if r["U"] == 4)
    assert row4["n_pairs"] == 3 and row4["per_seed_accuracy"] == [1.0, 1.0]
    assert row4["seed_std"] == pytest.approx(np.std([-0.01, 0.01], ddof=1))
    assert row4["min_gap"] == pytest.approx(0.1)
    assert out["trusted_from"] == 4


def test_decision_accuracy_says_when_there_is_nothing_to_rank():
    one = _decision_table().query("condition == 'a'")
    assert "skipped" in decision_accuracy(one)
    single_seed = decision_accuracy(_decision_table().query("seed == 0"))
    assert not single_seed["several_seeds"] and single_seed["rows"][0]["per_seed_accuracy"] is None


def test_decision_accuracy_reports_the_per_seed_spread():
    out = decision_accuracy(_decision_table(), n_resamples=200)
    row2 = next(r for r in out["rows"] if r["U"] == 2)
    assert row2["per_seed_std"] == 0.0 and row2["per_seed_accuracy"] == [pytest.approx(2 / 3)] * 2
    assert (
        out["bootstrap"]["n_resamples"] == 200
        and "within each (condition, size) cell" in (out["bootstrap"]["resampled"])
    )
    single = decision_accuracy(_decision_table().query("seed == 0"))
    assert single["bootstrap"] == {"skipped": "no seed repeats: nothing to resample"}
    assert single["rows"][0]["accuracy_interval"] is None and single["rows"][0]["per_seed_std"] is None
    assert decision_accuracy(_decision_table(), n_resamples=0)["bootstrap"] == {
        "skipped": "no resamples requested"
    }


#: true mean loss per size and condition; at the target size 4, a < b < c < d with wide gaps. At 2, b, c and
#: d are 0.01-0.02 apart and c, d swapped (5 of 6 pairs right); at 1, a-c and c-d flipped (4 of 6)
PLANTED = {
    1: {"a": 3.00, "b": 3.02, "c": 2.99, "d": 3.10},
    2: {"a": 2.50, "b": 2.52, "c": 2.54, "d": 2.53},
    4: {"a": 2.00, "b": 2.10, "c": 2.20, "d": 2.30},
}
PLANTED_ACCURACY = {1: 4 / 6, 2: 5 / 6}


def _planted_table(rng: np.random.Generator, seeds: int = 4, sigma: float = 0.01) -> pd.DataFrame:
    """PLANTED plus Gaussian seed noise ``sigma`` on every run."""
    rows = [
        {"condition": c, "U": u, "seed": s, "loss": m + rng.normal(0.0, sigma)}
        for u, per in PLANTED.items()
        for c, m in per.items()
        for s in range(seeds)
    ]
    return pd.DataFrame(rows)


def test_decision_accuracy_bootstrap_interval_covers_the_planted_accuracy():
    """Over 40 noisy draws of the same planted study (seed noise 0.01, gaps 0.01-0.02 at the small sizes),
    the 95% interval over seeds holds the accuracy of the true means nearly always, and is not [0, 1]."""
    covered, widths = 0, []
    for i in range(40):
        out = decision_accuracy(_planted_table(np.random.default_rng(100 + i)), n_resamples=400, seed=i)
        for r in out["rows"]:
            lo, hi = r["accuracy_interval"]
            covered += lo <= PLANTED_ACCURACY[int(r["U"])] <= hi
            widths.append(hi - lo)
    assert covered >= 0.9 * 80, covered
    assert 0.0 < float(np.mean(widths)) < 0.35, np.mean(widths)
    quiet = decision_accuracy(_planted_table(np.random.default_rng(7), sigma=1e-4), n_resamples=200)
    for r in quiet["rows"]:
        assert r["accuracy_interval"] == [pytest.approx(PLANTED_ACCURACY[int(r["U"])])] * 2


# ------------------------------------------------------------------------------------- signal and noise


def _exact_noise_table(
    seeds: dict[str, int], sigma: dict[str, float], delta: dict[str, float]
) -> pd.DataFrame:
    """Two sizes; condition c at U has mean 2 + delta[c] and runs whose sample std (ddof 1) is exactly
    sigma[c]: the seed noise is planted exactly, so the SNR is known to the last digit."""
    rows = []
    for u in (1000, 2000):
        for c, n in seeds.items():
            z = np.linspace(-1.0, 1.0, n)
            z = (z - z.mean()) / z.std(ddof=1)
            rows += [{"condition": c, "U": u, "seed": s, "loss": 2.0 + delta[c] + sigma[c] * z[s]}
                     for s in range(n)]  # fmt: skip
    return pd.DataFrame(rows)


def test_snr_is_the_planted_difference_over_its_seed_standard_error():
    table = _exact_noise_table({"a": 3, "b": 5, "c": 4}, {"a": 0.01, "b": 0.02, "c": 0.01},
                               {"a": 0.0, "b": 0.05, "c": 0.0})  # fmt: skip
    out = condition_snr(table)
    pairs = {(p["U"], p["a"], p["b"]): p for p in out["pairs"]}
    ab = pairs[(2000.0, "a", "b")]
    noise = np.sqrt(0.01**2 / 3 + 0.02**2 / 5)
    assert ab["signal"] == pytest.approx(0.05) and ab["noise"] == pytest.approx(noise)
    assert ab["snr"] == pytest.approx(0.05 / noise) and ab["better"] == "a"
    assert (ab["n_a"], ab["n_b"]) == (3, 5) and ab["same_order_as_target"] is None  # 2000 is the target
    assert pairs[(1000.0, "a", "b")]["same_order_as_target"] is True
    ac = pairs[(1000.0, "a", "c")]
    assert ac["signal"] < 1e-12 and ac["snr"] < 1e-9  # no planted difference: no signal
    size = out["sizes"][0]
    assert size["n_pairs"] == 3 and size["share_resolved"] == pytest.approx(2 / 3)
    assert size["weakest_pair"] == ["a", "c"] and out["target_size"] == 2000


def test_snr_matches_the_planted_effect_and_is_low_without_one():
    """Random seed noise (sigma 0.01, 12 seeds, 8 sizes): b is 0.012 worse than a (planted SNR
    0.012 / (0.01·sqrt(2/12)) = 2.94), c equals a. The median SNR over sizes finds 2.94 within 25%;
    the pair with no difference stays below 1.5, and well under half its comparisons pass SNR 2."""
    rng, sigma, n = np.random.default_rng(3), 0.01, 12
    shift = {"a": 0.0, "b": 0.012, "c": 0.0}
    rows = [{"condition": c, "U": 1000 * 2**k, "seed": s, "loss": 3.0 - 0.1 * k + d + rng.normal(0, sigma)}
            for k in range(8) for c, d in shift.items() for s in range(n)]  # fmt: skip
    pairs = condition_snr(pd.DataFrame(rows))["pairs"]
    snr = {key: [p["snr"] for p in pairs if (p["a"], p["b"]) == key] for key in (("a", "b"), ("a", "c"))}
    planted = 0.012 / (sigma * np.sqrt(2 / n))
    assert float(np.median(snr[("a", "b")])) == pytest.approx(planted, rel=0.25), snr[("a", "b")]
    assert float(np.median(snr[("a", "c")])) < 1.5 and np.mean(np.array(snr[("a", "c")]) >= 2) < 0.5


def test_snr_is_not_measured_without_seed_repeats():
    one_seed = _decision_table().query("seed == 0")
    assert (
        condition_snr(one_seed) == {"skipped": NO_REPEATS} == {"skipped": "no seed repeats: SNR not measured"}
    )
    assert condition_snr(_decision_table().query("condition == 'a'"))["skipped"]


# ------------------------------------------------------------------------------------- domain transfer

IN_DOMAIN = {"code": 4.0, "literature": 5.0}
OFF_DOMAIN = {("code", "literature"): 6.5, ("literature", "code"): 6.0}  # (train, eval): loss at U = 1000


def _domain_records(root: Path) -> None:
    """Single-domain runs (plus one mixture) at two sizes: loss halves its gap to in-domain at 4x the data."""
    base = synthetic_record("domain", 1000, 0, (5.0, 5.0), True, ("code", "literature"),
                                  np.zeros(2), {}, 1000)  # fmt: skip
    for u, shrink in ((1000, 1.0), (4000, 0.5)):
        for train in ("code", "literature"):
            per = {e: IN_DOMAIN[e] - (0.5 if u == 4000 else 0.0) for e in IN_DOMAIN}
            for e in per:
                if e != train:
                    per[e] += shrink * (OFF_DOMAIN[(train, e)] - IN_DOMAIN[e])
            rec = dataclasses.replace(
                base, run_id=f"{train}-{u}", unique_tokens=u, test_loss=float(np.mean(list(per.values()))),
                axes={"weights": {train: 1.0}, "unique_tokens": u, "seed": 0}, test_loss_by_domain=per,
            )  # fmt: skip
            write_record(root / "runs" / rec.run_id, rec)
    mixed = dataclasses.replace(
        base, run_id="mix-4000", unique_tokens=4000, test_loss=4.4,
        axes={"weights": {"code": 0.5, "literature": 0.5}, "unique_tokens": 4000, "seed": 0},
        test_loss_by_domain={"code": 3.7, "literature": 5.1},
    )  # fmt: skip
    write_record(root / "runs" / mixed.run_id, mixed)


def test_domain_matrix_and_transfer_from_hand_made_records(tmp_path):
    _domain_records(tmp_path)
    df = load_records(tmp_path)
    out = domain_matrix(df)
    assert out["train_domains"] == ["code", "literature"] and out["sizes"] == [1000.0, 4000.0]
    m_small = out["matrices"]["1000"]
    assert m_small["code"] == {"code": 4.0, "literature": 6.5}
    assert m_small["literature"] == {"code": 6.0, "literature": 5.0}
    assert out["matrices"]["4000"]["code"]["literature"] == pytest.approx(4.5 + 0.75)
    gaps = {(r["train"], r["eval"]): r for r in out["transfer"]}
    assert gaps[("code", "literature")]["gap_small"] == pytest.approx(1.5)
    assert gaps[("code", "literature")]["gap_large"] == pytest.approx(0.75)
    assert gaps[("literature", "code")]["relative_change"] == pytest.approx(-0.5)
    parts = {(r["eval"]): r for r in mixtures_vs_parts(df)["rows"]}
    # parts at U=4000: code run (3.5 code, 5.25 lit), literature run (4.5 code, 4.5 lit)
    assert parts["code"]["interpolated"] == pytest.approx(0.5 * 3.5 + 0.5 * 4.5)
    assert parts["code"]["best_part"] == "code" and parts["code"]["measured"] == pytest.approx(3.7)
    assert parts["literature"]["gain_over_interpolation"] == pytest.approx(0.5 * 5.25 + 0.5 * 4.5 - 5.1)


# --------------------------------------------------------------------------------------- mixing law

DOMAINS = ("literature", "code", "science")
TRUE_LAWS = {  # eval domain -> (c, k, t per training domain; the last one 0)
    "literature": (3.0, 1.5, (-1.2, 0.4, 0.0)),
    "code": (2.0, 2.0, (0.6, -1.5, 0.0)),
}


def _mixtures(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.dirichlet(np.ones(len(DOMAINS)), size=n)


def _true_loss(eval_domain: str, R: np.ndarray) -> np.ndarray:
    c, k, t = TRUE_LAWS[eval_domain]
    return c + k * np.exp(R @ np.array(t))


def test_mixing_law_fit_recovers_known_parameters_and_the_best_mixture():
    rng = np.random.default_rng(3)
    R = _mixtures(14, rng)
    losses = {e: _true_loss(e, R) * np.exp(rng.normal(0, 5e-4, len(R))) for e in TRUE_LAWS}
    laws = fit_mixing_laws(R, losses, DOMAINS)
    for e, (c, k, t) in TRUE_LAWS.items():
        assert laws[e].c == pytest.approx(c, rel=0.05), e
        assert laws[e].k == pytest.approx(k, rel=0.05), e
        assert [laws[e].t[d] for d in DOMAINS] == pytest.approx(list(t), abs=0.08), e
    weights, predicted = best_mixture(laws, DOMAINS)
    assert sum(weights.values()) == pytest.approx(1.0) and all(round(w, 2) == w for w in weights.values())
    from scaling_analysis.steps.conditions.mixing import simplex_grid

    grid = simplex_grid(3)
    true_mean = np.mean([_true_loss(e, grid) for e in TRUE_LAWS], axis=0)
    true_best = grid[int(np.argmin(true_mean))]
    assert np.abs(np.array([weights[d] for d in DOMAINS]) - true_best).max() <= 0.03
    assert predicted == pytest.approx(float(true_mean.min()), rel=2e-3)


def test_mixing_law_predicts_held_out_mixtures_of_the_published_pile_runs():
    """Ye et al.'s 70M runs at step 30000: fitted on mixtures 0-19, predicting the other 6 per domain group
    within 3% (and better than the mean of the fitted runs)."""
    path = REFERENCE / "mixinglaws_pile5domain_losses.csv"
    if not path.exists():
        pytest.skip(f"reference data not found at {path}; CI provides ../shared")
    table = pd.read_csv(path)
    runs = table[(table["model_size"] == "70M") & (table["step"] == 30000)]
    loss = runs.groupby(["run_id", "val_domain"])["val_loss"].mean().unstack()
    cols = ["p1", "p2", "p3", "p4", "p5"]
    R = runs.groupby("run_id")[cols].first().loc[loss.index].to_numpy()
    fit = loss.index.to_numpy() < 20
    for group in loss.columns:
        y = loss[group].to_numpy()
        law = fit_mixing_law(R[fit], y[fit], cols, group)
        err = np.abs(law.predict(R[~fit]) / y[~fit] - 1)
        baseline = np.abs(y[fit].mean() / y[~fit] - 1)
        assert err.max() < 0.03 and err.mean() < baseline.mean(), (group, err, baseline)


def _mixture_frame(extra: list[dict] | None = None) -> pd.DataFrame:
    """Five literature/code weightings at two sizes, losses from a known two-domain law."""
    rows = []
    for u in (2000, 8000):
        size_term = 30.0 * u**-0.4
        for share in (1.0, 0.75, 0.5, 0.25, 0.0):
            w = (
                {"literature": share, "code": 1 - share}
                if 0 < share < 1
                else {"literature" if share else "code": 1.0}
            )
            r = mixture_matrix([w], ["code", "literature"])
            lit = 3.0 + 1.5 * np.exp(-2.0 * r[0, 1]) + size_term
            code = 2.5 + 1.0 * np.exp(-2.5 * r[0, 0]) + size_term
            axes = {"axis_weights": w, "axis_unique_tokens": u, "axis_seed": 0}
            losses = {"test_loss_literature": lit, "test_loss_code": code, "loss": (lit + code) / 2}
            rows.append({"run_id": f"m{share}-{u}", "study": "mixture", **axes, "U": u, "seed": 0, **losses})
    return pd.DataFrame(rows + (extra or []))


def test_mixture_study_proposes_a_mixture_and_later_validates_it(tmp_path):
    first = study.analyze_frame(
        _mixture_frame(), tmp_path, candidates=(), n_resamples=0, n_jobs=1, force=True
    )
    proposal = json.loads((tmp_path / "mixing_law.json").read_text())
    weights = proposal["weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and proposal["unique_tokens"] == 8000
    assert 0.25 < weights["literature"] < 0.75  # the law's optimum lies between the parts
    command = (
        "datascale --config-dir sweeps --config-name mixture hydra.mode=RUN "
        f"'subset.weights={{code:{weights['code']:g},literature:{weights['literature']:g}}}' "
        "subset.unique_tokens=8000"
    )
    assert proposal["command"] == command and command in first.report
    assert (
        "## Data mixing law" in first.report
        and "No run has been trained on the proposed mixture" in first.report
    )
    assert len(proposal["fitted_run_ids"]) == 5
    loo = first.fit_json["mixing_law"]["sizes"][-1]["leave_one_out"]
    assert len(loo["rows"]) == 5 and loo["max_are"] < 1e-3, "the data follow the law exactly"
    assert "Leave-one-mixture-out at U = 8000" in first.report
    measured = proposal["predicted"]["mean"] + 0.01
    run = {"run_id": "validation1", "study": "mixture", "axis_weights": dict(weights),
           "axis_unique_tokens": 8000, "axis_seed": 0, "U": 8000, "seed": 0,
           "test_loss_literature": measured, "test_loss_code": measured, "loss": measured}  # fmt: skip
    second = study.analyze_frame(
        _mixture_frame([run]), tmp_path, candidates=(), n_resamples=0, n_jobs=1, force=True
    )
    ml = second.fit_json["mixing_law"]
    assert ml["sizes"][-1]["n_mixtures"] == 5, "the validation run is not fitted"
    assert ml["proposal"]["weights"] == weights
    (validation,) = ml["validation"]
    assert validation["run_id"] == "validation1"
    assert validation["predicted"]["mean"] == pytest.approx(proposal["predicted"]["mean"])
    assert validation["measured"]["mean"] == pytest.approx(measured)
    assert "**Validation**" in second.report


# -------------------------------------------------------------------------------------- pool transforms


def test_precision_recall_of_removals_against_planted_documents():
    planted = {"d1": "typos", "d2": "typos", "d3": "boilerplate", "d4": "boilerplate"}
    out = precision_recall(planted, {"d1", "d3", "x9"})
    assert out["true_positives"] == 2 and out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(0.5) and out["recall_by_kind"] == {"boilerplate": 0.5, "typos": 0.5}
    assert precision_recall(planted, set())["precision"] is None


def test_precision_recall_matches_the_data_packages_own_computation():
    from datascale.data.quality.evaluation import removal_precision_recall

    degrade = {"name": "mix", "params": {}, "input_docs": 6, "output_docs": 7, "removed": {},
               "marked": {"a": "typos", "b": "shuffle", "c": "duplicates", "d": "typos"}}  # fmt: skip
    dedup = {
        "name": "minhash",
        "params": {},
        "input_docs": 7,
        "output_docs": 5,
        "removed": {"c": "dup", "x": "dup"},
    }
    filt = {"name": "c4", "params": {}, "input_docs": 5, "output_docs": 4, "removed": {"a": "c4_short"}}
    theirs = removal_precision_recall(degrade, [dedup, filt])
    ours = precision_recall(degrade["marked"], set(dedup["removed"]) | set(filt["removed"]))
    for key in ("planted", "removed", "true_positives", "precision", "recall", "f1", "recall_by_kind"):
        assert ours[key] == theirs[key], key


def test_pool_transform_fields_read_records_and_the_pool_manifest(tmp_path):
    manifest = tmp_path / "pool_manifest.json"
    reports = [
        {
            "group": "degrade",
            "report": {"name": "mix", "removed": {}, "marked": {"a": "typos", "b": "shuffle"}},
        },
        {
            "group": "filter",
            "report": {"name": "c4", "removed": {"a": "c4_lines", "z": "c4_short"}, "marked": {}},
        },
    ]
    manifest.write_text(json.dumps({"reports": reports}))
    base = synthetic_record("noise", 1000, 0, (5.0, 5.0), True, ("web",), np.zeros(1), {}, 1000)
    summary = {"group": "filter", "name": "c4", "input_docs": 10, "output_docs": 8,
               "removed": {"c4_lines": 1, "c4_short": 1}, "marked": 0}  # fmt: skip
    rec = dataclasses.replace(base, run_id="r1", pool_transforms=[summary])
    write_record(tmp_path / "runs" / "r1", rec)
    (tmp_path / "runs" / "r1" / "data_artifacts.json").write_text(
        json.dumps({"pool_manifest": str(manifest)})
    )
    out = pool_transform_fields(tmp_path, {"r1": "fraction=0.25 filter=c4"})
    entry = out["conditions"]["fraction=0.25 filter=c4"]
    assert entry["transforms"][0]["removed"] == {"c4_lines": 1, "c4_short": 1}
    step = entry["quality"]["steps"]["filter:c4"]
    assert (step["precision"], step["recall"]) == (0.5, 0.5)
    assert pool_transform_fields(tmp_path / "nowhere", {})["skipped"]
    (section,) = condition_sections({"pool_transforms": out})
    assert "| fraction=0.25 filter=c4 | filter:c4 | 2 | 2 | 1 | 50% | 50% |" in section


# ----------------------------------------------------------------------------------- the study report


def test_condition_study_report_has_every_condition_section(tmp_path):
    result = study.analyze_frame(_quality_table(seeds=2), tmp_path, candidates=(), n_resamples=100, n_jobs=1)
    report = result.report
    for heading in CONDITION_HEADINGS[:3]:
        assert heading in report
    assert (
        "one token of q=0.3 is worth" in report and "![per-condition curves](condition_curves.png)" in report
    )
    eff = result.fit_json["effective_data"]
    k_row = next(r for r in eff["multipliers"] if r["condition"] == "q=0.3")
    assert k_row["interval"][0] < k_row["k"] < k_row["interval"][1]
    for name in ("condition_curves.png", "effective_data_k.png", "decision_accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0 and name in result.fit_json["outputs"]
    assert "| U | decision accuracy | 95% interval | pairs | seeds | per-seed accuracy (std) |" in report
    assert "## Signal and noise per comparison" in report
    assert "| U | pairs | median SNR | SNR ≥ 2 | lowest SNR | weakest pair |" in report
    snr = result.fit_json["condition_snr"]
    assert [r["U"] for r in snr["sizes"]] == [2000, 4000, 8000, 16000, 32000]
    assert all(r["n_pairs"] == 1 and r["median_snr"] > 0 for r in snr["sizes"])
    lines = console_lines(result.fit_json)
    assert any(line.startswith("signal-to-noise of condition pairs by U") for line in lines)
    no_repeats = {**result.fit_json, "condition_snr": {"skipped": NO_REPEATS}}
    sections = condition_sections(no_repeats)
    assert any(
        s.startswith("## Signal and noise") and "No seed repeats: SNR not measured" in s for s in sections
    )
    assert "no seed repeats: SNR not measured" in console_lines(no_repeats)[-1]
    assert all(not s.startswith("## Signal") for s in condition_sections({"condition_snr": no_repeats}))


def test_plain_size_study_has_no_condition_sections(tmp_path):
    write_synthetic_study(tmp_path / "data_size", sizes=(1e5, 2e5, 4e5, 8e5), seeds=(0,))
    result = study.analyze_study(tmp_path / "data_size", n_resamples=20, n_jobs=1, candidates=())
    for heading in CONDITION_HEADINGS:
        assert heading not in result.report
    assert result.fit_json["effective_data"] == {
        "skipped": "no swept axis besides size and seed: a plain size study"
    }
    assert not any(k in result.fit_json["skipped"] for k in ("effective_data", "mixing_law"))
    assert not (tmp_path / "data_size" / "mixing_law.json").exists()


def test_domain_study_report_has_the_matrix_and_mixtures_sections(tmp_path):
    _domain_records(tmp_path)
    result = study.analyze_study(tmp_path, n_resamples=0, n_jobs=1, candidates=())
    report = result.report
    assert "## Domain transfer" in report and "## Mixtures against their parts" in report
    assert "| code | 4 | 6.5 |" in report  # train code at U = 1000: in-domain 4, literature 6.5
    assert "![train-domain x eval-domain test loss](domain_matrix.png)" in report
    assert "## Data mixing law" not in report, "one mixture cannot fit a mixing law"
    assert "mixing_law" in result.fit_json["skipped"]


def test_cli_prints_the_command_that_trains_the_proposed_mixture(tmp_path, capsys):
    from scaling_analysis import cli

    base = synthetic_record("mixture", 1000, 0, (5.0, 5.0), True, ("code", "literature"),
                                  np.zeros(2), {}, 1000)  # fmt: skip
    for _, row in _mixture_frame().iterrows():
        per = {"code": float(row["test_loss_code"]), "literature": float(row["test_loss_literature"])}
        rec = dataclasses.replace(
            base, run_id=str(row["run_id"]), unique_tokens=int(row["U"]), test_loss=float(row["loss"]),
            axes={"weights": row["axis_weights"], "unique_tokens": int(row["U"]), "seed": 0},
            test_loss_by_domain=per,
            launch={"study_file": "mixture", "overrides": [
                "source=local_files", f"subset.weights={row['axis_weights']}",
                f"subset.unique_tokens={row['U']}", "seed=0"]},
        )  # fmt: skip
        write_record(tmp_path / "runs" / rec.run_id, rec)
    assert cli.main([str(tmp_path), "--resamples", "0", "--jobs", "1", "--candidates", "none"]) == 0
    proposal = json.loads((tmp_path / "mixing_law.json").read_text())
    printed = capsys.readouterr().out.splitlines()
    assert proposal["command"] in printed, "the command is printed on a line of its own, unwrapped"
    assert proposal["command"].startswith(
        "datascale --config-dir sweeps --config-name mixture source=local_files seed=0 "
        "hydra.mode=RUN 'subset.weights={"
    ), "the runs' own overrides (their data source) come along; their mixture and size are replaced"
    assert proposal["command"].count("subset.weights") == 1 and proposal["command"].endswith(
        "unique_tokens=8000"
    )


def test_a_proposal_that_was_already_trained_is_validated_with_a_new_seed():
    """When the law's best mixture is one it was fitted on, its command trains it again with an unused seed
    (that run tests the law; the fitted one does not)."""
    import pandas as pd
    from scaling_analysis.steps.conditions.mixing import launch_command

    runs = pd.DataFrame({"study_file": ["mixture"], "launch_overrides": ['["seed=0", "filter=c4"]']})
    command = launch_command("mixture", {"code": 0.5, "literature": 0.5}, 16000, runs, seed=1)
    assert command.endswith("filter=c4 hydra.mode=RUN 'subset.weights={code:0.5,literature:0.5}' "
                            "subset.unique_tokens=16000 seed=1")  # fmt: skip
    assert "seed=0" not in command
