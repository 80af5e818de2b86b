"""Run records and external result tables -> one tidy DataFrame (one row per run) with a fixed schema.

Fits, plots and reports read only this table, so they never depend on where the numbers came from
(run records, a published CSV, a parquet written earlier). Every row filter or transformation that changes
what gets fitted is a *preprocessing step*: it is applied by a function here, appended to
``df.attrs["preprocessing"]`` and copied from there into the fit's ``preprocessing`` and ``fit.json``,
so that no exclusion is ever silent (Li et al. 2025).
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datascale.records import RunRecord, field_docs, find_records
from datascale.run_id import differing_keys, protocol_hash, protocol_view

from ..engine.jsonutil import json_safe

LOSS_METRICS = ("test_loss", "best_val_loss", "final_val_loss")
N_DEFINITIONS = {"total": "params_total", "non_embedding": "params_non_embedding"}
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


class NoRecordsError(FileNotFoundError):
    """A study directory without any usable run record (the message names the path)."""


def _column_docs() -> dict[str, str]:
    d = field_docs()
    return {
        "run_id": d["run_id"],
        "source_row": "tables only: the row's 0-based position in the source CSV/parquet (CSV line = row + "
        "2), "
        "so that dropped and flagged rows can be found in the file",
        "study": d["study"],
        "status": d["status"],
        "seed": d["seed"],
        "axis_<name>": "one column per swept axis: the value of `axes[<name>]` "
        "(characters other than letters, digits and `_` become `_`). " + d["axes"],
        "N": "model size used by fits: `params_total` by default ("
        + d["params_total"]
        + "); `n_definition='non_embedding'` uses `params_non_embedding` (recorded in preprocessing)",
        "N_non_embedding": d["params_non_embedding"],
        "U": d["unique_tokens"] + "; the scaling variable of a data-size study",
        "D": d["tokens_seen"]
        + "; tokens seen, not unique tokens (a data-size study trains many epochs, so D != U)",
        "C": "approximate training compute in FLOP, 6 * N * D (records); for tables, as mapped or derived",
        "epochs": d["epochs"],
        "steps": d["steps"],
        "converged": d["converged"],
        "stop_reason": d["stop_reason"],
        "loss": "the loss the fits use: a copy of `test_loss` unless `loss_metric` picks "
        "`best_val_loss` or `final_val_loss` (recorded in preprocessing); nats per token",
        "test_loss": d["test_loss"],
        "best_val_loss": d["best_val_loss"],
        "final_val_loss": d["final_val_loss"],
        "val_loss_<domain>": d["val_loss_best"] + " (one column per domain)",
        "test_loss_<domain>": d["test_loss_by_domain"] + " (one column per domain)",
        "test_bpb_<domain>": d["test_bpb"] + " (one column per domain)",
        "test_bpb_mean": d["test_bpb_mean"],
        "tokens_at_best": d["tokens_at_best"],
        "epochs_at_best": d["epochs_at_best"],
        "schedule_position": d["schedule_position"] + "; empty for records written before it existed",
        "cooldown_steps": "optimizer steps of the run's cooldown (`cooldown.steps`; 0 without one)",
        "protocol": "hash of the run's config less the study's axes and the seed "
        "(`datascale.run_id.protocol_hash`): runs of one folder with different values were trained under "
        "different protocols, and only the newest record's protocol is fitted (a recorded step drops the "
        "rest)",
        "wall_time_s": d["wall_time_s"],
        "tokens_per_s": d["tokens_per_s"],
        "code_version": d["code_version"],
        "subset_hash": d["subset_hash"],
        "tokenizer_hash": d["tokenizer_hash"],
        "error": d["error"],
        "objective": d["objective"],
        "study_file": "the study file the run was launched from (`launch.study_file`); empty for "
        "conf/config.yaml or records without it",
        "launch_overrides": "the Hydra job's overrides (`launch.overrides`) as a JSON list: "
        + d["launch"].split("; ")[-1],
        "ds_<task>_<mode>_<metric>": "downstream result per task and mode (`/` becomes `_`), metric "
        "`accuracy`, `macro_f1`, `loss`, `chance` or `n_test`. " + d["downstream"],
        "ref_uniform_loss": "ln V, the test loss of a uniform prediction over the vocabulary (macro-mean "
        "over the eval domains, like `test_loss`): where a loss curve starts, L0 of the envelope law; nats "
        "per token. From `reference_losses` (" + d["reference_losses"] + ")",
        "ref_unigram_loss": "macro-mean over the eval domains of the test set's unigram entropy (the loss of "
        "a model that knows only its token frequencies); nats per token",
        "ref_<kind>_<domain>": "per eval domain, test split: `ref_unigram_loss_<domain>` (nats per token), "
        "`ref_uniform_bpb_<domain>` and `ref_unigram_bpb_<domain>` (bits per byte)",
        "condition": "a categorical condition (domain, mixture, quality level) for per-condition curves; "
        "external tables map it, `domain_long` builds it from the per-domain columns",
    }


#: Every column of the tidy run table and what it means (rendered into the README and the report glossary).
COLUMNS: dict[str, str] = _column_docs()

_INT_COLUMNS = ("seed", "N", "N_non_embedding", "U", "D", "steps", "tokens_at_best", "cooldown_steps")
_FLOAT_COLUMNS = (
    "C",
    "epochs",
    "loss",
    "test_loss",
    "best_val_loss",
    "final_val_loss",
    "test_bpb_mean",
    "epochs_at_best",
    "schedule_position",
    "wall_time_s",
    "tokens_per_s",
)
_STR_COLUMNS = (
    "run_id",
    "study",
    "status",
    "stop_reason",
    "code_version",
    "subset_hash",
    "tokenizer_hash",
    "error",
    "objective",
    "study_file",
    "launch_overrides",
    "protocol",
)
#: the per-task metrics of the record's ``downstream`` field that become ``ds_<task>_<mode>_<metric>``
DOWNSTREAM_METRICS = ("accuracy", "macro_f1", "loss", "chance", "n_test")


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", str(name))


def _new_preprocessing(source: str, path: Path | str, **extra: Any) -> dict[str, Any]:
    return {"source": source, "path": str(path), **extra, "steps": []}


def preprocessing_of(df: pd.DataFrame) -> dict[str, Any]:
    """The preprocessing record attached to a run table (an empty one if the table has none)."""
    pre = df.attrs.get("preprocessing")
    if pre is None:
        return {"source": "dataframe", "steps": []}
    return copy.deepcopy(pre)


def _with_step(df: pd.DataFrame, pre: dict[str, Any], step: dict[str, Any]) -> pd.DataFrame:
    pre = copy.deepcopy(pre)
    pre.setdefault("steps", []).append(json_safe(step))
    pre["n_rows"] = len(df)
    df.attrs["preprocessing"] = pre
    return df


# --------------------------------------------------------------------------------------------- records


def record_row(
    rec: RunRecord, *, loss_metric: str = "test_loss", n_definition: str = "total"
) -> dict[str, Any]:
    """One tidy row from one run record (the mapping documented in ``COLUMNS``)."""
    n_total, n_ne = rec.params_total, rec.params_non_embedding
    n = n_total if n_definition == "total" else n_ne
    row: dict[str, Any] = {
        "run_id": rec.run_id,
        "study": rec.study,
        "status": rec.status,
        "seed": rec.seed,
    }
    for name, value in (rec.axes or {}).items():
        row[f"axis_{_safe_name(name)}"] = value
    row.update(
        {
            "N": n,
            "N_non_embedding": n_ne,
            "U": rec.unique_tokens,
            "D": rec.tokens_seen,
            "C": 6.0 * n * rec.tokens_seen if n is not None and rec.tokens_seen is not None else None,
            "epochs": rec.epochs,
            "steps": rec.steps,
            "converged": rec.converged,
            "stop_reason": rec.stop_reason,
            "loss": getattr(rec, loss_metric),
            "test_loss": rec.test_loss,
            "best_val_loss": rec.best_val_loss,
            "final_val_loss": rec.final_val_loss,
        }
    )
    for prefix, values in (
        ("val_loss_", rec.val_loss_best),
        ("test_loss_", rec.test_loss_by_domain),
        ("test_bpb_", rec.test_bpb),
    ):
        for domain, v in sorted((values or {}).items()):
            row[prefix + _safe_name(domain)] = v
    row.update(
        {
            "test_bpb_mean": rec.test_bpb_mean,
            "tokens_at_best": rec.tokens_at_best,
            "epochs_at_best": rec.epochs_at_best,
            "schedule_position": rec.schedule_position,
            "cooldown_steps": int((rec.cooldown or {}).get("steps", 0)),
            "protocol": record_protocol(rec),
            "wall_time_s": rec.wall_time_s,
            "tokens_per_s": rec.tokens_per_s,
            "code_version": rec.code_version,
            "subset_hash": rec.subset_hash,
            "tokenizer_hash": rec.tokenizer_hash,
            "error": rec.error,
            "objective": rec.objective,
            "study_file": (rec.launch or {}).get("study_file") or "",
            "launch_overrides": json.dumps((rec.launch or {}).get("overrides") or []),
        }
    )
    row.update(downstream_columns(rec.downstream))
    row.update(reference_columns(rec.reference_losses))
    return row


def reference_columns(
    reference: Mapping[str, Mapping[str, Mapping[str, float]]] | None, split: str = "test"
) -> dict[str, float]:
    """``ref_*`` columns from a record's ``reference_losses`` (none for records written before it existed)."""
    per = {str(d): v[split] for d, v in (reference or {}).items() if split in v}
    if not per:
        return {}
    out = {
        "ref_uniform_loss": float(np.mean([v["uniform_nats"] for v in per.values()])),
        "ref_unigram_loss": float(np.mean([v["unigram_nats"] for v in per.values()])),
    }
    for domain, v in sorted(per.items()):
        for key, prefix in (
            ("unigram_nats", "unigram_loss"),
            ("uniform_bpb", "uniform_bpb"),
            ("unigram_bpb", "unigram_bpb"),
        ):
            out[f"ref_{prefix}_{_safe_name(domain)}"] = float(v[key])
    return out


def reference_loss(df: pd.DataFrame, column: str = "ref_uniform_loss") -> float | None:
    """The one reference loss of a run table (L0 for ``envelope_U_fixed``), or None when the table has none.

    Why one: runs of one study share tokenizer and held-out sets, so their references agree; runs that
    disagree (two tokenizers in one table) have no single L0, which is an error, not something to average.
    """
    if column not in df.columns:
        return None
    values = pd.to_numeric(df[column], errors="coerce").dropna().unique()
    if values.size == 0:
        return None
    if np.ptp(values) > 1e-9 * max(1.0, float(np.max(np.abs(values)))):
        raise ValueError(
            f"{column}: runs disagree ({sorted(map(float, values))[:5]}); fit one tokenizer at a time"
        )
    return float(values[0])


def downstream_columns(downstream: Mapping[str, Mapping[str, Any]] | None) -> dict[str, float]:
    """``ds_<task>_<mode>_<metric>`` columns from a record's ``downstream`` field."""
    return {
        f"ds_{_safe_name(r['task'])}_{r['mode']}_{metric}": float(r[metric])
        for r in (downstream or {}).values()
        for metric in DOWNSTREAM_METRICS
    }


def set_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    for col in _INT_COLUMNS:
        if col in df:
            df[col] = df[col].astype("int64" if df[col].notna().all() else "Int64")
    per_domain = [str(c) for c in df.columns if re.match(r"(val_loss|test_loss|test_bpb|ds|ref)_", str(c))]
    float_cols = [*_FLOAT_COLUMNS, *per_domain]
    for col in float_cols:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    if "converged" in df:
        df["converged"] = df["converged"].astype("bool" if df["converged"].notna().all() else "boolean")
    for col in _STR_COLUMNS:
        if col in df:
            df[col] = df[col].astype("str")
    return df


def load_records(
    study_dir: Path | str,
    *,
    loss_metric: str = "test_loss",
    n_definition: str = "total",
    include_failed: bool = False,
    strict: bool = False,
    records: Sequence[RunRecord] | None = None,
) -> pd.DataFrame:
    """Tidy table of every finished run below ``study_dir`` (``runs/*/record.json``), sorted by U, seed, run
    id.

    Reads only run records (never W&B files or run names). ``loss`` is a copy of ``loss_metric``; runs whose
    loss is not finite are dropped by a recorded preprocessing step that lists them (``strict=True`` refuses
    instead). Failed runs are left out unless ``include_failed`` (then ``status`` tells them apart and they
    are never fitted by ``analyze_study``). ``records``: the study's records already read (``analyze_study``
    reads the directory once, ``excluded.scan_study``); None reads them here.
    """
    if loss_metric not in LOSS_METRICS:
        raise ValueError(f"loss_metric={loss_metric!r}: must be one of {list(LOSS_METRICS)}")
    if n_definition not in N_DEFINITIONS:
        raise ValueError(f"n_definition={n_definition!r}: must be one of {list(N_DEFINITIONS)}")
    root = Path(study_dir)
    if not root.is_dir():
        raise NoRecordsError(f"{root}: not a directory")
    records = list(records) if records is not None else find_records(root, status=None)
    all_found = len(records)
    if not include_failed:
        records = [r for r in records if r.status == "done"]
    if not records:
        raise NoRecordsError(
            f"{root}: no {'' if include_failed else 'finished '}run records (looked for */record.json; "
            f"found {all_found} record(s) in all)"
        )
    df = pd.DataFrame([record_row(r, loss_metric=loss_metric, n_definition=n_definition) for r in records])
    df = set_dtypes(df)
    df = df.sort_values(["U", "seed", "run_id"], kind="stable").reset_index(drop=True)
    pre = _new_preprocessing(
        "records",
        root,
        loss_metric=loss_metric,
        n_definition=f"{n_definition} ({N_DEFINITIONS[n_definition]})",
        status_filter=None if include_failed else "done",
        n_records_found=all_found,
        n_rows_raw=len(df),
        n_rows=len(df),
    )
    df.attrs["preprocessing"] = pre
    df = keep_latest_protocol(df, records)
    return _drop_nonfinite_records(df, loss_metric, strict)


def keep_latest_protocol(df: pd.DataFrame, records: Sequence[RunRecord]) -> pd.DataFrame:
    """Runs of one folder trained under different protocols (``datascale.run_id.protocol_hash``: the config
    less the study's axes and the seed) are not points of one curve: keep the protocol of the newest record,
    drop the others by a recorded step that names the keys that differ (their records stay on disk)."""
    if df["protocol"].nunique() <= 1:
        return df
    protocol = dict(zip(df["run_id"], df["protocol"], strict=True))  # the column, hashed once per record
    newest = max((r for r in records if r.run_id in protocol), key=lambda r: r.created_at or "")
    kept = protocol[newest.run_id]
    other = next(r for r in records if protocol.get(r.run_id, kept) != kept)
    bad = (df["protocol"] != kept).to_numpy()
    differs = differing_keys(
        protocol_view(config_of(newest), study_axes(config_of(newest))),
        protocol_view(config_of(other), study_axes(config_of(other))),
    )
    step = {
        "rule": "other_protocol",
        "kept_protocol": kept,
        "differs_in": differs,
        "n_dropped": int(bad.sum()),
        "run_ids": df.loc[bad, "run_id"].tolist(),
        "rows": dropped_rows(df, bad, ["run_id"]),
    }
    pre = preprocessing_of(df)
    return _with_step(df.loc[~bad].reset_index(drop=True), pre, step)


def record_protocol(record: RunRecord) -> str:
    """The protocol hash of a run (the ``protocol`` column); records without a config (a W&B run without one)
    share one."""
    config = config_of(record)
    return protocol_hash(config, study_axes(config))


def config_of(record: RunRecord) -> Mapping[str, Any]:
    """A record's resolved config, or an empty one (a W&B run may come without it)."""
    return record.config if isinstance(record.config, Mapping) else {}


def study_axes(config: Mapping[str, Any]) -> list[str]:
    """The dotted keys a run's study swept (``study.axes`` of its resolved config)."""
    study = config.get("study") if isinstance(config, Mapping) else None
    axes = study.get("axes") if isinstance(study, Mapping) else None
    return [str(a) for a in axes or []]


def _drop_nonfinite_records(df: pd.DataFrame, loss_metric: str, strict: bool) -> pd.DataFrame:
    """Finished runs without a finite loss: dropped and listed by a recorded step (or refused when strict)."""
    bad = ~np.isfinite(df["loss"].to_numpy(dtype=float)) & (df["status"] == "done").to_numpy()
    if not bad.any():
        return df
    dropped = df.loc[bad, "run_id"].tolist()
    listed = dropped_rows(df, bad, [loss_metric])
    if strict:
        raise StrictDropError(
            f"strict: {len(dropped)} finished run(s) have no finite {loss_metric}: "
            f"{describe_rows(listed, len(dropped))}"
        )
    pre = preprocessing_of(df)
    out = df.loc[~bad].reset_index(drop=True)
    step = {
        "rule": "drop_nonfinite_loss",
        "column": loss_metric,
        "n_dropped": len(dropped),
        "run_ids": dropped,
        "rows": listed,
    }
    return _with_step(out, pre, step)


def save_runs(df: pd.DataFrame, path: Path | str) -> Path:
    """Write the run table as parquet (``runs.parquet``); preprocessing travels in the file's metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out, _ = big_ints_as_floats(df)  # a table that did not come through load_table may still hold them
    out = out.copy()
    out.attrs = {"preprocessing": json.dumps(json_safe(preprocessing_of(df)))}
    out.to_parquet(path, index=False)
    return path


def read_runs(path: Path | str) -> pd.DataFrame:
    """Read a ``runs.parquet`` written by ``save_runs``, restoring its preprocessing record."""
    df = pd.read_parquet(path)
    raw = df.attrs.get("preprocessing")
    df.attrs = {"preprocessing": json.loads(raw) if isinstance(raw, str) else raw or {}}
    if not df.attrs["preprocessing"]:
        df.attrs["preprocessing"] = _new_preprocessing("table", path, n_rows_raw=len(df), n_rows=len(df))
    return df


# ---------------------------------------------------------------------------------------- preprocessing


def expression_columns(df: pd.DataFrame, expression: str) -> list[str]:
    """Columns of ``df`` that a pandas expression refers to (plain names and backquoted names)."""
    names = set(re.findall(r"`([^`]+)`", expression))
    try:
        tree = ast.parse(re.sub(r"`[^`]+`", "0", expression), mode="eval")
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    except SyntaxError:
        pass
    return [c for c in df.columns if c in names]


def _check_numeric(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """A ValueError naming the column, the row and the value when a column used in arithmetic is not
    numeric."""
    for col in columns:
        values = df[col]
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna() & values.notna()
        if bad.any():
            pos = int(np.nonzero(bad.to_numpy())[0][0])
            where = describe_rows(dropped_rows(df, bad.to_numpy(), [col]), int(bad.sum()), limit=1)
            raise ValueError(
                f"{what}: column {col!r} is not numeric ({where}; {int(bad.sum())} such row(s), "
                f"first value {values.iloc[pos]!r}); fix the table or map another column"
            )


def derive(df: pd.DataFrame, name: str, expression: str) -> pd.DataFrame:
    """Add a column computed by a pandas expression over other columns, e.g. ``derive(df, "D", "C / (6 *
    N)")``.

    Columns the expression uses must be numeric; otherwise the error names the column, the row and the value.
    """
    pre = preprocessing_of(df)
    what = f"derived column {name}={expression!r}"
    used = expression_columns(df, expression)
    _check_numeric(df, used, what)
    numeric = df.copy()
    for col in used:
        numeric[col] = pd.to_numeric(numeric[col], errors="coerce")
    try:
        with np.errstate(all="ignore"):
            values = numeric.eval(expression, engine="python")
    except Exception as exc:  # pandas raises several types; one clear message is what matters
        raise ValueError(f"{what}: {exc} (columns: {list(df.columns)})") from exc
    out = df.copy()
    out[name] = values
    return _with_step(out, pre, {"rule": "derive", "column": name, "expression": expression})


def exclude(df: pd.DataFrame, query: str, *, reason: str = "") -> pd.DataFrame:
    """Drop the rows matching a pandas query (e.g. ``"N < 1e8"``), recording which (row, column, value) and
    why."""
    pre = preprocessing_of(df)
    try:
        matched = df.eval(query, engine="python")
    except Exception as exc:  # pandas raises several types; one clear message is what matters
        raise ValueError(f"exclude query {query!r}: {exc} (columns: {list(df.columns)})") from exc
    mask = pd.Series(np.asarray(matched, dtype=bool), index=df.index)
    listed = dropped_rows(df, mask.to_numpy(), expression_columns(df, query) or ["loss"])
    out = df.loc[~mask].reset_index(drop=True)
    step = {"rule": "exclude", "query": query, "reason": reason, "n_dropped": int(mask.sum()), "rows": listed}
    return _with_step(out, pre, step)


#: Schedules whose intermediate evaluations are points of a consistent curve (no half-decayed LR).
CURVE_SCHEDULES = (
    "datascale.training.schedule.WarmupStableDecay",
    "datascale.training.schedule.WarmupStableCooldown",
)


def log_spaced(curve: Sequence[Mapping[str, Any]], per_decade: int) -> list[Mapping[str, Any]]:
    """The curve points nearest to ``per_decade`` log-spaced token counts per decade (each point once), so
    that the many late evaluations of a long run do not outweigh its early ones."""
    points = [p for p in curve if float(p["tokens_seen"]) > 0]
    if len(points) <= 2:
        return points
    logs = np.log10([float(p["tokens_seen"]) for p in points])
    grid = np.arange(logs[0], logs[-1] + 1e-9, 1.0 / per_decade)
    chosen = sorted({int(np.argmin(np.abs(logs - g))) for g in grid} | {len(points) - 1})
    return [points[i] for i in chosen]


def expand_learning_curves(
    df: pd.DataFrame, records: Sequence[RunRecord], per_decade: int = 4
) -> pd.DataFrame:
    """Each run's row repeated at log-spaced points of its ``val_curve`` (``per_decade`` per decade of
    tokens; every evaluation is in the record): ``D`` = tokens seen there, ``loss`` = the validation loss
    there (``curve_step``, ``from_curve``), recorded with the two caveats of such points.

    Points of one run share its initialisation and data order, so they are not independent (intervals from
    them are too narrow); under a cosine schedule an intermediate point is not the loss of a run trained to
    that many tokens (the LR has not decayed: Hoffmann et al. 2022), so it over-states the loss there.
    """
    pre = preprocessing_of(df)
    by_id = {r.run_id: r for r in records}
    rows, cosine = [], []
    for row in df.to_dict("records"):
        rec = by_id.get(str(row["run_id"]))
        if rec is None or not rec.val_curve:
            continue
        target = str((rec.config.get("schedule") or {}).get("_target_", ""))
        if target not in CURVE_SCHEDULES:
            cosine.append(rec.run_id)
        stable = rec.val_curve[:-1] if rec.cooldown else rec.val_curve  # the last: the annealed model
        for point in log_spaced(stable, per_decade):
            d = float(point["tokens_seen"])
            n = row.get("N")
            rows.append(row | {"D": d, "loss": float(point["loss"]), "curve_step": int(point["step"]),
                               "from_curve": True, "C": 6.0 * n * d if n is not None else None})  # fmt: skip
    if not rows:
        raise NoRecordsError("--from-curves: no run has a learning curve (val_curve) in its record")
    out = pd.DataFrame(rows).reset_index(drop=True)
    step = {
        "rule": "learning_curves",
        "n_runs": len({r["run_id"] for r in rows}),
        "n_points": len(rows),
        "reason": "points of one run are not independent: intervals are too narrow",
        "points_per_decade": per_decade,
        "cosine_runs": cosine,
    }
    if cosine:
        step["warning"] = (
            f"{len(cosine)} runs used a cosine schedule: their intermediate losses over-state the loss of a "
            "run trained to those tokens (use schedule=wsd)"
        )
    return _with_step(out, pre, step)


def drop_highest(df: pd.DataFrame, k: int, *, column: str = "loss") -> pd.DataFrame:
    """Drop the ``k`` rows with the highest ``column`` (Epoch's outlier rule: keep ``loss <
    sorted(loss)[-k]``).

    Ties at the cut-off are dropped too, exactly like Epoch's strict ``<``; the step records the cut-off and
    the dropped values.
    """
    if k < 0:
        raise ValueError(f"drop_highest={k}: must be >= 0")
    pre = preprocessing_of(df)
    if k == 0:
        return df
    if k >= len(df):
        raise ValueError(f"drop_highest={k}: the table has only {len(df)} rows")
    values = df[column].to_numpy(dtype=float)
    cutoff = float(np.sort(values)[-k])
    keep = values < cutoff
    dropped = sorted(values[~keep].tolist())
    listed = dropped_rows(df, ~keep, [column])
    out = df.loc[keep].reset_index(drop=True)
    step = {
        "rule": "drop_highest",
        "column": column,
        "k": k,
        "cutoff": cutoff,
        "n_dropped": len(dropped),
        "dropped_values": dropped,
        "rows": listed,
        "max_kept": float(values[keep].max()),
    }
    return _with_step(out, pre, step)


def collapse_min(
    df: pd.DataFrame, over: str | Sequence[str], *, by: Sequence[str] | None = None, column: str = "loss"
) -> pd.DataFrame:
    """Keep, per cell, the row with the lowest ``column`` over a sweep (e.g. the best learning rate per (N,
    D)).

    A cell is a distinct combination of ``by`` (default: the scaling variables N, D, U, C, condition present
    in the table). Other columns come from the kept row, so the chosen sweep value stays visible.
    """
    over = [over] if isinstance(over, str) else list(over)
    missing = [c for c in over if c not in df]
    if missing:
        raise ValueError(f"collapse_min_over={missing}: no such column (columns: {list(df.columns)})")
    if by is None:
        by = [c for c in ("N", "D", "U", "C", "condition") if c in df and c not in over]
        # C is a function of N and D when both exist; grouping on it as well would only split float noise
        if "N" in by and "D" in by and "C" in by:
            by.remove("C")
    by = list(by)
    if not by:
        raise ValueError("collapse_min: no cell columns (map N/D/U or pass by=...)")
    pre = preprocessing_of(df)
    idx = df.groupby(by, sort=True, dropna=False)[column].idxmin()
    out = df.loc[idx.to_numpy()].reset_index(drop=True)
    n_swept = int((df.groupby(by, dropna=False).size() > 1).sum())
    step = {
        "rule": "collapse_min",
        "over": over,
        "by": by,
        "column": column,
        "n_before": len(df),
        "n_after": len(out),
        "n_cells_swept": n_swept,
    }
    return _with_step(out, pre, step)


_INT64_MAX = int(np.iinfo(np.int64).max)


def _overflows_int64(values: pd.Series) -> bool:
    """True for a column of whole numbers some of which do not fit in int64 (pyarrow cannot store it)."""
    if values.dtype == np.uint64:
        return bool(len(values)) and int(values.max()) > _INT64_MAX
    if values.dtype != object:
        return False
    present = values.dropna()
    ints = [v for v in present if isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)]
    return len(ints) == len(present) > 0 and any(abs(int(v)) > _INT64_MAX for v in ints)


def big_ints_as_floats(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Columns of integers beyond int64 (FLOP counts such as 1.5e20) as float64, and their names.

    Why: pandas keeps them as Python ints (object dtype), which pyarrow refuses to write (OverflowError in
    ``save_runs``); as floats they keep 15-16 significant digits, far more than any fit uses.
    """
    columns = [str(c) for c in df.columns if _overflows_int64(df[c])]
    if not columns:
        return df, []
    out = df.copy()
    for col in columns:
        out[col] = out[col].astype("float64")
    out.attrs = dict(df.attrs)
    return out, columns


def _read_table(path: Path) -> pd.DataFrame:
    """The file as a DataFrame; unreadable files raise a ValueError naming the file."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: unsupported table type {suffix!r} (use one of {list(TABLE_SUFFIXES)})")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except (ValueError, OSError) as exc:  # pandas' EmptyDataError/ParserError and pyarrow errors among them
        raise ValueError(f"{path}: cannot be read as a {suffix[1:]} table ({exc})") from exc


def parse_columns(spec: str | None) -> dict[str, str]:
    """``'Model Size=N,loss=loss'`` -> ``{'Model Size': 'N', 'loss': 'loss'}`` (the CLI's ``--columns``)."""
    if not spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"--columns entry {part!r}: expected 'csv_column=variable'")
        src, dst = part.rsplit("=", 1)
        out[src.strip()] = dst.strip()
    return out


#: How many dropped rows a preprocessing step lists one by one (all are counted).
MAX_LISTED_ROWS = 100


class StrictDropError(ValueError):
    """``strict=True`` and a row would have been dropped (the message lists which)."""


def row_id(df: pd.DataFrame, position: int) -> dict[str, Any]:
    """How to find one row again: its source-table row (0-based, tables) and/or run id."""
    out: dict[str, Any] = {}
    if "source_row" in df.columns:
        out["row"] = int(df["source_row"].iloc[position])
    elif "run_id" not in df.columns:
        out["row"] = int(position)
    if "run_id" in df.columns:
        out["run_id"] = str(df["run_id"].iloc[position])
    return out


def dropped_rows(df: pd.DataFrame, mask: np.ndarray, columns: Sequence[str]) -> list[dict[str, Any]]:
    """Row id, column and value of each dropped row (at most ``MAX_LISTED_ROWS``)."""
    rows = []
    for pos in np.nonzero(np.asarray(mask))[0][:MAX_LISTED_ROWS]:
        for col in columns:
            value = df[col].iloc[pos] if col in df.columns else None
            rows.append({**row_id(df, int(pos)), "column": col, "value": _cell_value(value)})
    return rows


def _cell_value(value: Any) -> Any:
    """A dropped cell's value for the record: ±inf as the strings 'inf' / '-inf' (json_safe turns every
    non-finite float into null, which the record and the console would then show as an empty cell)."""
    if isinstance(value, float | np.floating) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return json_safe(value)


def describe_rows(rows: Sequence[Mapping[str, Any]], n_total: int, limit: int = 5) -> str:
    """'row 2 (loss='n/a'), row 5 (loss=None) and 3 more' for messages and the console."""
    parts = []
    for r in rows[:limit]:
        where = f"row {r['row']}" if "row" in r else f"run {r.get('run_id')}"
        if "row" in r and "run_id" in r:
            where += f" (run {r['run_id']})"
        value = r.get("value")
        shown = "NaN/empty" if value is None else value if value in ("inf", "-inf") else repr(value)
        parts.append(f"{where}: {r.get('column')}=" + shown)
    more = n_total - min(len(rows), limit)
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _start_table(path: Path, columns: Mapping[str, str] | None, n_definition: str | None) -> pd.DataFrame:
    """The raw table with its columns mapped, a ``source_row`` column and a fresh (or continued) record."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw, as_float = big_ints_as_floats(_read_table(path))
    # a runs.parquet written by save_runs carries its own preprocessing: continue from it
    prior = raw.attrs.get("preprocessing")
    columns = dict(columns or {})
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: column(s) {missing} not in the table (columns: {list(raw.columns)})")
    df = raw.rename(columns=columns)
    dup = df.columns[df.columns.duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: mapping produces duplicate column(s) {dup}")
    if "source_row" not in df.columns:
        df["source_row"] = np.arange(len(df), dtype=np.int64)
    if isinstance(prior, str) and not columns:
        pre = json.loads(prior)
        pre.setdefault("steps", []).append({"rule": "reload", "path": str(path)})
    else:
        n_def = n_definition or _default_n_definition(columns, df)
        pre = _new_preprocessing(
            "table", path, column_mapping=columns, n_definition=n_def, n_rows_raw=len(raw), n_rows=len(raw)
        )
    if as_float:
        pre["read_as_float"] = {
            "columns": as_float,
            "why": "integers beyond int64 (parquet cannot store them)",
        }
    df.attrs = {"preprocessing": pre}
    return df


def _default_n_definition(columns: Mapping[str, str], df: pd.DataFrame) -> str:
    """What N counts when the caller did not say: the source column, as the table gives it."""
    source = next((src for src, dst in columns.items() if dst == "N"), None)
    if source is not None:
        return f"not stated: N is the table's column {source!r} as given (pass n_definition / --n-definition)"
    if "N" in df.columns:
        return "not stated: N is the table's column 'N' as given (pass n_definition / --n-definition)"
    return "no N column"


def _numeric_loss(df: pd.DataFrame, loss: str, strict: bool) -> pd.DataFrame:
    """``loss`` as floats; rows whose loss is not a finite number are dropped and listed (or refused)."""
    if loss != "loss":
        df = df.copy()
        df["loss"] = df[loss]
        df = _with_step(df, preprocessing_of(df), {"rule": "loss_column", "column": loss})
    raw = df["loss"].copy()
    df["loss"] = pd.to_numeric(df["loss"], errors="coerce").astype("float64")
    bad = ~np.isfinite(df["loss"].to_numpy())
    if not bad.any():
        return df
    listed = dropped_rows(df.assign(loss=raw), bad, ["loss"])
    if bad.all():
        raise ValueError(
            f"column {loss!r}: no row has a finite numeric loss ({describe_rows(listed, int(bad.sum()))}); "
            "map the loss column with --columns 'source=loss'"
        )
    if strict:
        raise StrictDropError(
            f"strict: {int(bad.sum())} row(s) of {loss!r} are not finite numbers: "
            f"{describe_rows(listed, int(bad.sum()))}; fix or exclude them explicitly"
        )
    pre = preprocessing_of(df)
    df = df.loc[~bad].reset_index(drop=True)
    step = {"rule": "drop_nonfinite_loss", "column": loss, "n_dropped": int(bad.sum()), "rows": listed}
    return _with_step(df, pre, step)


def load_table(
    path: Path | str,
    *,
    columns: Mapping[str, str] | None = None,
    derived: Mapping[str, str] | None = None,
    exclude_query: str | None = None,
    collapse_min_over: str | Sequence[str] | None = None,
    cell: Sequence[str] | None = None,
    drop_highest_k: int = 0,
    n_definition: str | None = None,
    loss: str = "loss",
    strict: bool = False,
) -> pd.DataFrame:
    """Any CSV/parquet of results -> the run-table schema, with every preprocessing step recorded.

    ``columns`` maps source columns to schema names (``{"Model Size": "N", "Training FLOP": "C"}``); unmapped
    columns are kept as they are (a sweep column to collapse, for instance), and ``source_row`` numbers the
    source table's rows (0-based) so that every dropped or flagged row can be found again. Steps run in a
    fixed order: mapping, ``derived`` columns (``{"D": "C / (6 * N)"}``), dropping non-numeric losses (listed;
    ``strict=True`` refuses instead), ``exclude_query``, ``collapse_min_over`` (per ``cell``),
    ``drop_highest_k``. ``n_definition`` is free text saying what N counts (e.g. "total parameters"); it is
    always recorded (default: the source column, as given) because it changes conclusions (§5.8).
    """
    path = Path(path)
    df = _start_table(path, columns, n_definition)
    for name, expression in (derived or {}).items():
        df = derive(df, name, expression)
    if loss not in df:
        raise ValueError(
            f"{path}: no {loss!r} column after mapping (map one with columns={{'<csv column>': 'loss'}}; "
            f"columns: {[c for c in df.columns if c != 'source_row']})"
        )
    df = _numeric_loss(df, loss, strict)
    if exclude_query:
        df = exclude(df, exclude_query, reason="exclude_query")
    if collapse_min_over:
        df = collapse_min(df, collapse_min_over, by=cell)
    if drop_highest_k:
        df = drop_highest(df, drop_highest_k)
    return df


def domain_long(df: pd.DataFrame, *, prefix: str = "test_loss_") -> pd.DataFrame:
    """Per-domain columns (``test_loss_<domain>``) -> long rows with ``condition`` = domain and ``loss``.

    For per-domain curves: every run appears once per domain; all non-per-domain columns are kept.
    """
    per_domain = re.compile(r"(val_loss|test_loss|test_bpb)_")
    dom_cols = [c for c in df.columns if c.startswith(prefix) and c != "test_bpb_mean"]
    if not dom_cols:
        raise ValueError(f"no columns starting with {prefix!r} (columns: {list(df.columns)})")
    keep = [c for c in df.columns if not per_domain.match(c) and c not in ("loss", "condition")]
    long = df[keep + dom_cols].melt(
        id_vars=keep, value_vars=dom_cols, var_name="condition", value_name="loss"
    )
    long["condition"] = long["condition"].str.removeprefix(prefix)
    pre = preprocessing_of(df)
    step = {"rule": "domain_long", "prefix": prefix, "domains": sorted(set(long["condition"]))}
    return _with_step(long, pre, step)


def non_converged(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose run did not converge (``converged == False``); empty if the table has no such column."""
    if "converged" not in df:
        return df.iloc[0:0]
    mask = ~df["converged"].fillna(True).astype(bool)
    return df.loc[mask]
