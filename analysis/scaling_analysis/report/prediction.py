"""A pre-registered prediction: the loss at the target sizes, fitted and written before any target trains.

Why: a law chosen and checked after the largest runs are in can always be made to fit them. Here the study's
target sizes (``analysis.predict.targets``) are left out, the law is chosen by the predictive tournament on
the other runs (a rule that reads only them), its prediction at each target gets a 95% interval (run-level
bootstrap widened by the seed-noise floor: one target run is one draw of that noise) and the whole is written
once, with the sha256 of the fitted inputs and a UTC time, before the launcher lets a target run start
(``datascale.orchestration.preregister``). The study step ``steps.prediction`` scores it later.

Files (names in ``datascale.records``): ``predictions/<inputs sha256[:12]>.json`` is written once and never
replaced (the same inputs give the same file; changed inputs a new one, the old kept), ``prediction.json`` is
a copy of the current one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datascale.records import (
    PREDICTION_FILENAME,
    PREDICTIONS_DIR,
    RunRecord,
    prediction_inputs,
    prediction_inputs_sha256,
)

from ..engine import FitResult, bootstrap
from ..engine.compare import TournamentResult, predictive_tournament
from ..engine.jsonutil import json_safe
from ..engine.noise import seed_noise_floor
from ..tables.excluded import scan_study
from ..tables.runs import NoRecordsError, load_records, reference_loss

CONFIDENCE = 0.95
Z_95 = 1.959963984540054
PREDICTION_SCHEMA = 1


@dataclass(frozen=True)
class Preregistered:
    """Where the current prediction is, its sha256, and whether this call wrote it (False: it existed)."""

    path: Path
    sha256: str
    created: bool
    prediction: dict[str, Any]


def study_targets(records: Sequence[RunRecord]) -> list[int]:
    """Numeric ``analysis.predict.targets`` of the study file, as recorded in a run's config; ``largest``
    needs the sweep, which only the launcher knows (it passes ``--targets``)."""
    for rec in records:
        targets = ((rec.config.get("analysis") or {}).get("predict") or {}).get("targets")
        if targets is None:
            continue
        if any(isinstance(t, str) for t in targets):
            raise ValueError(
                f"analysis.predict.targets={list(targets)}: 'largest' is the sweep's largest size, which the "
                "records do not say; give the sizes with --targets U,..."
            )
        return sorted(int(t) for t in targets)
    raise ValueError("--preregister: no target sizes (give --targets U,... or set analysis.predict.targets)")


def preregister(
    study_dir: Path | str,
    targets: Sequence[int] | None = None,
    *,
    loss_metric: str = "test_loss",
    n_resamples: int = 1000,
    seed: int = 0,
    n_jobs: int = -1,
) -> Preregistered:
    """Fit the runs at every size but ``targets`` and write the prediction at ``targets`` (write-once).

    With the same finished non-target runs as an earlier prediction, that one is kept (and made current):
    nothing is refitted or rewritten.
    """
    study_dir = Path(study_dir)
    records = [r for r in scan_study(study_dir).records if r.status == "done"]
    targets = sorted(int(t) for t in (targets or study_targets(records)))
    fitted = [r for r in records if int(r.unique_tokens) not in targets]
    if not fitted:
        raise NoRecordsError(f"{study_dir}: no finished run outside the targets {targets} to predict from")
    inputs_sha = prediction_inputs_sha256(fitted, loss_metric)
    path = study_dir / PREDICTIONS_DIR / f"{inputs_sha[:12]}.json"
    created = not path.exists()
    if created:
        df = load_records(study_dir, loss_metric=loss_metric, records=fitted)
        body = prediction_body(df, targets, n_resamples=n_resamples, seed=seed, n_jobs=n_jobs)
        body["study"] = fitted[0].study
        body["inputs"] = {
            "sha256": inputs_sha,
            "loss_metric": loss_metric,
            "n_runs": len(fitted),
            "sizes": sorted({int(r.unique_tokens) for r in fitted}),
            "rows": prediction_inputs(fitted, loss_metric),
        }
        write_once(path, body)
    text = path.read_bytes()
    _replace(study_dir / PREDICTION_FILENAME, text)
    return Preregistered(path, sha256_bytes(text), created, json.loads(text))


def prediction_body(
    df: pd.DataFrame, targets: Sequence[int], *, n_resamples: int, seed: int, n_jobs: int
) -> dict[str, Any]:
    """Tournament on ``df`` (one variable U), the chosen law's prediction at each target with its interval."""
    tour = predictive_tournament(
        df, by="U", reference_loss=reference_loss(df), loss="loss", force=True, n_jobs=n_jobs
    )
    fit = tour.fits[tour.chosen]
    floor = seed_noise_floor(df, ["U"])
    se_boot, boot_info = _bootstrap_log_se(fit, df, targets, n_resamples, seed, n_jobs)
    rows = [_target_row(fit, u, se_boot.get(u, math.nan), floor["floor"]) for u in targets]
    measured = bool(np.isfinite(floor["floor"]))
    return json_safe(
        {
            "schema": PREDICTION_SCHEMA,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "targets": list(targets),
            "law": fit.law,
            "formula": fit.bound_law.formula,
            "params": fit.params,
            "forced": "forced" in (fit.diagnostics.get("flags") or []),
            "confidence": CONFIDENCE,
            "predictions": rows,
            "rule": _rule_summary(tour),
            "seed_noise": {
                **floor,
                "measured": measured,
                "note": "relative std of one run's loss at a size (pooled over sizes with repeated seeds)"
                if measured
                else "not measured: no size has two finished seeds; the interval holds the bootstrap only",
            },
            "bootstrap": boot_info,
            "interval_rule": "exp(log(point) ± z·sqrt(se_bootstrap² + floor²)), se in log space, z = 1.96",
        }
    )


def _rule_summary(tour: TournamentResult) -> dict[str, Any]:
    """The tournament's choice, why, and every law's rule score."""
    cols = ["law", "eligible", "rule_score", "own_origins_score", "n_params", "aicc", "degenerate", "error"]
    table = tour.table[[c for c in cols if c in tour.table.columns]]
    return {
        "chosen": tour.chosen,
        "reason": tour.reason,
        "tie_abs": tour.tie_abs,
        "rule": tour.rule,
        "scores": table.to_dict(orient="records"),
    }


def _bootstrap_log_se(
    fit: FitResult, df: pd.DataFrame, targets: Sequence[int], n_resamples: int, seed: int, n_jobs: int
) -> tuple[dict[int, float], dict[str, Any]]:
    """Per target: the bootstrap std of log(predicted loss); and what the bootstrap was (or why none ran)."""
    n_sizes, n_free = int(df["U"].nunique()), len(fit.free_params)
    if n_resamples <= 0 or n_sizes < n_free:
        why = f"n_resamples={n_resamples}" if n_resamples <= 0 else f"{n_sizes} sizes for {n_free} parameters"
        return {}, {"skipped": why}
    law, var = fit.bound_law, fit.bound_law.variables[0]

    def at(u: int) -> Any:
        return lambda p: float(law.predict(dict(p), {var: np.array([float(u)])})[0])

    boot = bootstrap(fit, df, n_resamples=n_resamples, seed=seed, derived={str(u): at(u) for u in targets},
                     n_jobs=n_jobs, confidence=CONFIDENCE)  # fmt: skip
    ok = boot.samples[~boot.samples["failed"]]
    se = {}
    for u in targets:
        logs = np.log(pd.to_numeric(ok[str(u)], errors="coerce").to_numpy(dtype=float))
        logs = logs[np.isfinite(logs)]
        se[u] = float(np.std(logs, ddof=1)) if logs.size >= 2 else math.nan
    info = {"n_resamples": n_resamples, "n_failed": boot.n_failed, "seed": seed, "resampled": boot.resampled}
    pct = {str(u): list(boot.intervals.get(str(u), (math.nan, math.nan))) for u in targets}
    info["percentile_intervals"] = pct
    return se, info


def _target_row(fit: FitResult, u: int, se_boot: float, floor: float) -> dict[str, Any]:
    """Point prediction at U = u and its interval: bootstrap and seed noise added in log space."""
    point = float(fit.predict({fit.bound_law.variables[0]: np.array([float(u)])})[0])
    parts = [s for s in (se_boot, floor) if np.isfinite(s)]
    se = math.sqrt(sum(s * s for s in parts)) if np.isfinite(se_boot) else math.nan
    lo, hi = (point * math.exp(-Z_95 * se), point * math.exp(Z_95 * se)) if np.isfinite(se) else (None, None)
    return {
        "U": int(u),
        "loss": point,
        "interval": [lo, hi],
        "se_log_bootstrap": se_boot,
        "se_log_seed_noise": floor if np.isfinite(floor) else None,
        "se_log": se,
    }


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a file's bytes (what a target run's record carries)."""
    return hashlib.sha256(data).hexdigest()


def write_once(path: Path, body: dict[str, Any]) -> bool:
    """Write ``path`` only if it does not exist (a hard link of a finished temp file: exclusive and atomic);
    False when another process wrote it first (its file is kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=False, allow_nan=False) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def _replace(path: Path, data: bytes) -> None:
    """Atomically make ``path`` hold ``data`` (unchanged when it already does)."""
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
