"""The data mixing law of Ye et al. (2024/2025): per eval domain i, L_i(r) = c_i + k_i·exp(Σ_j t_ij·r_j).

Why: fitted to a handful of trained mixtures at one size, the law predicts the loss of any other mixture, so
the mixture with the lowest average held-out loss can be proposed and then trained to check the prediction.
Since Σ_j r_j = 1, one t per eval domain is redundant (adding a constant to every t_ij rescales k_i); the
last training domain's t_ij is fixed at 0, so t_ij reads "relative to that domain".

Fitting is variable projection: for fixed t the law is linear in (c, k), solved by non-negative least
squares over a grid of t; the best grid point is then refined jointly (bounded least squares on the loss).
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, nnls

from ...engine.jsonutil import json_safe
from .labels import format_value
from .transfer import EVAL_PREFIX, WEIGHTS_AXIS, eval_domains, weights_of

T_GRID = np.linspace(-8.0, 8.0, 33)
MAX_GRID_DIMS = 2  # beyond this many free t per eval domain, random grid points instead of a full grid
N_RANDOM_STARTS = 600
SIMPLEX_STEP = 0.01


@dataclass
class MixingLaw:
    """One eval domain's law: c, k and t per training domain (the last one 0), with its in-sample RMSE."""

    eval_domain: str
    train_domains: tuple[str, ...]
    c: float
    k: float
    t: dict[str, float]
    rmse: float
    n_mixtures: int

    def predict(self, R: np.ndarray) -> np.ndarray:
        """Loss for mixtures ``R[n, m]`` (columns in ``train_domains`` order)."""
        t = np.array([self.t[d] for d in self.train_domains])
        return self.c + self.k * np.exp(np.asarray(R, dtype=float) @ t)

    def to_dict(self) -> dict[str, Any]:
        return {"c": self.c, "k": self.k, "t": dict(self.t), "rmse": self.rmse, "n_mixtures": self.n_mixtures}


def _t_grid(n_free: int, rng: np.random.Generator) -> np.ndarray:
    if n_free <= MAX_GRID_DIMS:
        return np.array(list(itertools.product(T_GRID, repeat=n_free)))
    return rng.uniform(T_GRID[0], T_GRID[-1], size=(N_RANDOM_STARTS, n_free))


def _linear_part(R: np.ndarray, y: np.ndarray, t_free: np.ndarray) -> tuple[float, float, float]:
    """For fixed t: the (c, k) >= 0 minimising the squared error, and that error."""
    f = np.exp(R[:, :-1] @ t_free)
    A = np.column_stack([np.ones_like(f), f])
    (c, k), resid = nnls(A, y)
    return float(c), float(k), float(resid**2)


def fit_mixing_law(R: np.ndarray, y: np.ndarray, train_domains: Sequence[str], eval_domain: str) -> MixingLaw:
    """Fit one eval domain's law to mixtures ``R[n, m]`` (rows sum to 1) and their losses ``y[n]``."""
    R, y = np.asarray(R, dtype=float), np.asarray(y, dtype=float)
    m = R.shape[1]
    if len(y) < m + 1:
        raise ValueError(f"{len(y)} mixtures for {m + 1} parameters of the mixing law of {eval_domain!r}")
    rng = np.random.default_rng(0)
    grid = _t_grid(m - 1, rng)
    with np.errstate(over="ignore", invalid="ignore"):
        scored = [(_linear_part(R, y, t), t) for t in grid]
    (c0, k0, _), t0 = min(scored, key=lambda s: s[0][2] if np.isfinite(s[0][2]) else np.inf)

    def residuals(z: np.ndarray) -> np.ndarray:
        return z[0] + z[1] * np.exp(R[:, :-1] @ z[2:]) - y

    z0 = np.concatenate([[c0, max(k0, 1e-12)], t0])
    lower = np.concatenate([[0.0, 0.0], np.full(m - 1, -50.0)])
    upper = np.concatenate([[np.inf, np.inf], np.full(m - 1, 50.0)])
    with np.errstate(over="ignore", invalid="ignore"):
        sol = least_squares(
            residuals, np.clip(z0, lower, upper), bounds=(lower, upper), xtol=1e-14, ftol=1e-14
        )
    z = sol.x
    t = {d: float(v) for d, v in zip(train_domains[:-1], z[2:], strict=True)}
    t[str(train_domains[-1])] = 0.0
    rmse = float(np.sqrt(np.mean(residuals(z) ** 2)))
    return MixingLaw(
        str(eval_domain), tuple(map(str, train_domains)), float(z[0]), float(z[1]), t, rmse, len(y)
    )


def fit_mixing_laws(
    R: np.ndarray, losses: Mapping[str, np.ndarray], train_domains: Sequence[str]
) -> dict[str, MixingLaw]:
    """One law per eval domain (``losses``: eval domain -> loss per mixture row)."""
    return {e: fit_mixing_law(R, y, train_domains, e) for e, y in losses.items()}


def mean_prediction(laws: Mapping[str, MixingLaw], R: np.ndarray) -> np.ndarray:
    """The average over eval domains of the predicted loss (what the runs report as test_loss)."""
    return np.mean([law.predict(R) for law in laws.values()], axis=0)


def simplex_grid(m: int, step: float = SIMPLEX_STEP) -> np.ndarray:
    """Every mixture of ``m`` domains with weights on a ``step`` grid (m <= 3; coarser above)."""
    n = round(1 / step) if m <= 3 else round(1 / 0.05)
    rows = [c for c in itertools.product(range(n + 1), repeat=m - 1) if sum(c) <= n]
    grid = np.array([[*c, n - sum(c)] for c in rows], dtype=float) / n
    return grid


def best_mixture(
    laws: Mapping[str, MixingLaw], train_domains: Sequence[str]
) -> tuple[dict[str, float], float]:
    """The mixture (weights rounded to 2 decimals, summing to 1) with the lowest predicted average loss."""
    grid = simplex_grid(len(train_domains))
    with np.errstate(over="ignore", invalid="ignore"):
        pred = mean_prediction(laws, grid)
    i = int(np.nanargmin(pred))
    weights = {str(d): round(float(w), 2) for d, w in zip(train_domains, grid[i], strict=True)}
    return weights, float(pred[i])


def mixture_matrix(weights: Sequence[Mapping[str, float]], train_domains: Sequence[str]) -> np.ndarray:
    """Rows of mixture weights (missing domains 0), normalised to sum to 1."""
    R = np.array([[float(w.get(d, 0.0)) for d in train_domains] for w in weights], dtype=float)
    return R / R.sum(axis=1, keepdims=True)


PROPOSAL_KEYS = ("subset.weights", "subset.unique_tokens", "hydra.mode")


def launch_command(
    study: str,
    weights: Mapping[str, float],
    unique_tokens: int,
    runs: pd.DataFrame | None = None,
    seed: int | None = None,
) -> str:
    """The exact command that trains the proposed mixture: the study file and the overrides its runs were
    launched with (``study_file``, ``launch_overrides``: e.g. ``source=local_files ...``), the mixture and
    size replaced (and the seed, when ``seed`` is given); records without launch information fall back to
    ``sweeps/<study>.yaml``."""
    replaced = (*PROPOSAL_KEYS, "seed") if seed is not None else PROPOSAL_KEYS
    study_file, shared = study, []
    if runs is not None and "study_file" in runs and runs["study_file"].astype(str).str.len().gt(0).all():
        files = sorted(set(runs["study_file"].astype(str)))
        study_file = files[0] if len(files) == 1 else study
        lists = [json.loads(str(v)) for v in runs.get("launch_overrides", pd.Series(["[]"]))]
        shared = [o for o in lists[0] if all(o in other for other in lists[1:])]
        shared = [o for o in shared if o.split("=", 1)[0].lstrip("+~") not in replaced]
    spec = ",".join(f"{d}:{w:g}" for d, w in weights.items() if w > 0)
    args = [
        *shared,
        "hydra.mode=RUN",
        f"subset.weights={{{spec}}}",
        f"subset.unique_tokens={int(unique_tokens)}",
        *([f"seed={seed}"] if seed is not None else []),
    ]
    return f"datascale --config-dir sweeps --config-name {shlex.quote(study_file)} " + " ".join(
        shlex.quote(a) for a in args
    )


def same_weights(a: Mapping[str, float], b: Mapping[str, float], tol: float = 5e-3) -> bool:
    """True when two mixtures agree to the 2 decimals the proposal is written with."""
    keys = set(a) | set(b)
    return all(abs(float(a.get(k, 0.0)) - float(b.get(k, 0.0))) <= tol for k in keys)


# ------------------------------------------------------------------------------------------- study level

PROPOSAL_FILE = "mixing_law.json"


def read_proposal(out_dir: Path) -> dict[str, Any] | None:
    """The mixture an earlier analysis proposed (``mixing_law.json``), or None."""
    path = Path(out_dir) / PROPOSAL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("weights"), dict) else None


def validation_mask(df: pd.DataFrame, weights: pd.Series, proposal: Mapping[str, Any] | None) -> np.ndarray:
    """Runs trained on an earlier proposal (its weights and size, not among the runs that proposal was fitted
    on): they test the law, so they are never fitted by it."""
    if not proposal:
        return np.zeros(len(df), dtype=bool)
    fitted = set(proposal.get("fitted_run_ids") or [])
    same = weights.map(lambda w: same_weights(w, proposal["weights"])).to_numpy(dtype=bool)
    at_size = (
        (df["U"].to_numpy(dtype=float) == float(proposal.get("unique_tokens", -1))) if "U" in df else same
    )
    new = ~df["run_id"].astype(str).isin(fitted).to_numpy() if "run_id" in df else same
    return same & at_size & new


def _loss_columns(df: pd.DataFrame) -> dict[str, str]:
    """Eval domain -> column (per-domain test losses; the mean loss when the table has none)."""
    domains = eval_domains(df)
    return {d: EVAL_PREFIX + d for d in domains} if domains else {"mean": "loss"}


def _size_design(g: pd.DataFrame, train: list[str], cols: Mapping[str, str]) -> tuple[np.ndarray, dict, list]:
    """Mixtures at one size averaged over seeds: R, losses per eval domain, and the runs used."""
    keyed = g.assign(_key=g[WEIGHTS_AXIS].map(lambda v: format_value(weights_of(v))))
    means = keyed.groupby("_key", sort=True)[list(cols.values())].mean()
    first = keyed.groupby("_key", sort=True)[WEIGHTS_AXIS].first()
    R = mixture_matrix([weights_of(first[k]) for k in means.index], train)
    losses = {e: means[c].to_numpy(dtype=float) for e, c in cols.items()}
    return R, losses, list(g["run_id"].astype(str)) if "run_id" in g else []


def _fit_sizes(mix: pd.DataFrame, train: list[str], cols: Mapping[str, str]) -> tuple[list, dict]:
    """Per size with enough distinct mixtures: the laws and their best mixture; why other sizes were not."""
    fits, skipped = [], {}
    for size, g in mix.groupby("U", sort=True):
        R, losses, run_ids = _size_design(g, train, cols)
        if len(R) < len(train) + 2:  # one more mixture than parameters, or nothing checks the fit
            skipped[format_value(size)] = (
                f"{len(R)} distinct mixtures: {len(train) + 1} parameters per eval domain need "
                f"{len(train) + 2} (one to spare)"
            )
            continue
        laws = fit_mixing_laws(R, losses, train)
        weights, predicted = best_mixture(laws, train)
        fits.append(
            {"size": float(str(size)), "laws": laws, "best": weights, "predicted": predicted, "runs": run_ids}
        )
        fits[-1].update(n_mixtures=len(R), leave_one_out=leave_one_out(R, losses, train))
    return fits, skipped


def leave_one_out(R: np.ndarray, losses: Mapping[str, np.ndarray], train: Sequence[str]) -> dict[str, Any]:
    """Each mixture's mean loss predicted by the law fitted to the others: a check that costs no training.

    ``{"skipped": reason}`` when dropping one mixture would leave no mixture to spare.
    """
    n = len(R)
    if n - 1 < len(train) + 2:
        return {"skipped": f"{n} mixtures: leaving one out leaves too few to fit with one to spare"}
    rows, errors = [], []
    for i in range(n):
        keep = np.arange(n) != i
        laws = fit_mixing_laws(R[keep], {e: y[keep] for e, y in losses.items()}, train)
        predicted = float(mean_prediction(laws, R[i : i + 1])[0])
        measured = float(np.mean([y[i] for y in losses.values()]))
        weights = {str(d): float(w) for d, w in zip(train, R[i], strict=True)}
        errors.append(abs(predicted / measured - 1))
        rows.append(
            {"weights": weights, "predicted": predicted, "measured": measured, "abs_rel_error": errors[-1]}
        )
    return {"rows": rows, "mape": float(np.mean(errors)), "max_are": float(np.max(errors))}


def _predicted_losses(laws: Mapping[str, MixingLaw], weights: Mapping[str, float], train: list[str]) -> dict:
    R = mixture_matrix([weights], train)
    out = {e: float(law.predict(R)[0]) for e, law in laws.items()}
    out["mean"] = float(np.mean(list(out.values()))) if "mean" not in laws else out["mean"]
    return out


def _validations(
    df: pd.DataFrame, mask: np.ndarray, fits: list, train: list[str], cols: Mapping[str, str], proposal: Any
) -> list[dict[str, Any]]:
    """Predicted against measured for every run trained on an earlier proposal."""
    out = []
    for _, run in df.loc[mask].iterrows():
        w = weights_of(run[WEIGHTS_AXIS])
        fit = next((f for f in fits if f["size"] == float(run["U"])), None)
        predicted = _predicted_losses(fit["laws"], w, train) if fit else dict(proposal.get("predicted") or {})
        measured = {e: float(run[c]) for e, c in cols.items()}
        measured["mean"] = float(run["loss"])
        out.append({"run_id": str(run.get("run_id", "")), "weights": w, "U": float(run["U"]),
                    "predicted": predicted, "measured": measured})  # fmt: skip
    return out


def mixing_law_analysis(df: pd.DataFrame, out_dir: Path | str, study: str) -> dict[str, Any]:
    """Fit the mixing law at every size, propose the best mixture at the largest, write ``mixing_law.json``.

    Returns the fit.json ``mixing_law`` field (``{"skipped": reason}`` for a study without mixtures).
    """
    if WEIGHTS_AXIS not in df:
        return {"skipped": "no subset.weights axis"}
    weights = df[WEIGHTS_AXIS].map(weights_of)
    train = sorted({d for w in weights for d in w})
    if len(train) < 2 or (weights.map(len) > 1).sum() == 0:
        return {"skipped": "no run mixes two or more training domains"}
    proposal = read_proposal(Path(out_dir))
    mask = validation_mask(df, weights, proposal)
    cols = _loss_columns(df)
    fits, skipped = _fit_sizes(df.loc[~mask & weights.map(bool).to_numpy()], train, cols)
    out: dict[str, Any] = {"train_domains": train, "eval_domains": list(cols), "skipped_sizes": skipped}
    out["validation"] = _validations(df, mask, fits, train, cols, proposal)
    if not fits:
        why = "; ".join(f"U = {size}: {reason}" for size, reason in skipped.items())
        return {**out, "skipped": f"no size has enough distinct mixtures ({why})"}
    out["sizes"] = [_size_fields(f) for f in fits]
    top = fits[-1]
    new = {
        "study": study,
        "weights": top["best"],
        "unique_tokens": int(top["size"]),
        "predicted": _predicted_losses(top["laws"], top["best"], train),
        "command": launch_command(
            study, top["best"], int(top["size"]), _runs_of(df, top["runs"]), _fresh_seed(df, top, weights)
        ),
        "fitted_run_ids": top["runs"],
        "validation": out["validation"],
    }
    path = Path(out_dir) / PROPOSAL_FILE
    path.write_text(json.dumps(json_safe(new), indent=2) + "\n")
    return {**out, "proposal": {k: v for k, v in new.items() if k != "validation"}, "file": PROPOSAL_FILE}


def _fresh_seed(df: pd.DataFrame, top: Mapping[str, Any], weights: pd.Series) -> int | None:
    """A seed no run has used, when the proposed mixture is one the law was fitted on (its run is not a
    test of the law: a new seed of it is); None otherwise."""
    if "run_id" not in df or "seed" not in df:
        return None
    fitted = df["run_id"].astype(str).isin(set(top["runs"])).to_numpy()
    same = weights.map(lambda w: same_weights(w, top["best"])).to_numpy(dtype=bool)
    at_size = df["U"].to_numpy(dtype=float) == float(top["size"])
    return int(df["seed"].max()) + 1 if (fitted & same & at_size).any() else None


def _runs_of(df: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame | None:
    return df[df["run_id"].astype(str).isin(set(run_ids))] if "run_id" in df else None


def _size_fields(fit: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "U": fit["size"],
        "n_mixtures": fit["n_mixtures"],
        "laws": {e: law.to_dict() for e, law in fit["laws"].items()},
        "best_mixture": fit["best"],
        "predicted_mean_loss": fit["predicted"],
        "leave_one_out": fit["leave_one_out"],
    }
