"""W&B runs -> the same tidy run table as ``scaling_analysis.tables.runs.load_records``.

Run records (``record.json``) are the source of truth and W&B is a view of them. This module is for a study
whose records are not at hand but whose runs were synced to a W&B project. A W&B run becomes a
record-shaped dict (:func:`wandb_run_to_record_like`); that dict goes through :func:`record_like_to_row`,
which delegates to ``runs.record_row``, the one record -> row mapping. The W&B table then
has exactly the columns and dtypes of ``load_records``: run_id, study, status, seed, axis_<name>, N,
N_non_embedding, U, D, C, epochs, steps, converged, stop_reason, loss, test_loss, best_val_loss,
final_val_loss, val_loss_<domain>, test_loss_<domain>, test_bpb_<domain>, test_bpb_mean, tokens_at_best,
epochs_at_best, wall_time_s, tokens_per_s, code_version, subset_hash, tokenizer_hash, error.

W&B summary -> record field: record-named keys (``datascale.training.tracking.SUMMARY_FIELDS``, set when a
run finishes) win; metric names left by Lightning logging fill the gaps (:data:`SUMMARY_ALIASES`,
:data:`SUMMARY_DOMAIN_PATTERNS`). Per-domain validation loss at the best checkpoint (tidy
``val_loss_<domain>``) is read only from a ``val_loss_best`` mapping in the summary, which the tracker does
not write yet: without it those columns are absent. Axes come from config ``run.axes``, then config
``study.axes`` (dotted keys named by their last part, like ``datascale.launch.axis_values``), then
``name=value`` tags.

Imports neither torch nor, until :func:`load_wandb_runs` needs ``wandb.Api``, wandb.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

import pandas as pd

from datascale.records import RunRecord

from .runs import LOSS_METRICS, N_DEFINITIONS, record_row, set_dtypes

#: Summary keys (after the aliases below) a finished run needs to count as a record-equivalent run.
REQUIRED_SUMMARY_KEYS: tuple[str, ...] = (
    "unique_tokens",
    "tokens_seen",
    "params_total",
    "best_val_loss",
    "test_loss",
)

#: Record field <- W&B summary keys, first present wins. The summary of a logged metric is its *last*
#: value, so ``val/loss`` is the final (not the best) validation loss.
SUMMARY_ALIASES: dict[str, tuple[str, ...]] = {
    "test_loss": ("test_loss", "test/loss"),
    "final_val_loss": ("final_val_loss", "val/loss"),
}

#: Record per-domain field <- W&B summary metric (``{d}`` = domain), used when the summary has no
#: record-shaped dict of that name. ``val_loss_best`` (the tidy ``val_loss_<domain>``) has no metric
#: fallback on purpose: the summary of ``val/<d>/loss`` is the last evaluation, not the best checkpoint's.
SUMMARY_DOMAIN_PATTERNS: dict[str, str] = {
    "test_loss_by_domain": "test/{d}/loss",
    "test_bpb": "test/{d}/bpb",
    "val_loss_final": "val/{d}/loss",
}

#: Record field -> its annotation ("int", "float", "bool", "str", "dict[str, float]" ...).
_RECORD_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(RunRecord)}
_RECORD_FIELDS: tuple[str, ...] = tuple(_RECORD_TYPES)
_DICT_FIELDS = ("val_loss_best", "val_loss_final", "test_loss_by_domain", "val_bpb_best", "test_bpb")
#: Identity fields that come from the run itself (id, group, state, tags, config), never from its summary.
_NOT_FROM_SUMMARY = frozenset({"run_id", "study", "status", "axes", "config", "wandb", "schema_version"})
_DOMAIN_KEY = re.compile(r"^(?:val|test)/(?P<domain>[^/]+)/(?:loss|bpb)$")


# --------------------------------------------------------------------------------------------------- helpers
def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _coerce(kind: str, value: Any) -> Any:
    """A value as the record type ``kind``: counts logged through ``self.log`` arrive as floats, flags as
    0.0/1.0."""
    if _is_missing(value):
        return None
    if kind == "bool":
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value
    if kind not in ("int", "float") or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = float(value)  # W&B writes "NaN"/"Infinity" for non-finite summaries
        except ValueError:
            return value
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "float" and isinstance(value, int):
        return float(value)
    return value


def _parse_tag_value(text: str) -> Any:
    """``unique_tokens=16000`` -> 16000: tags are strings, record axes are typed."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return None if lowered in ("none", "null") else text


def _plain(value: Any) -> Any:
    """A W&B summary/config value as plain Python (``HTTPSummary`` nests ``SummarySubDict`` objects)."""
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        return {str(k): _plain(value[k]) for k in value.keys()}  # noqa: SIM118 (SummarySubDict has no __iter__)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dotted_get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


# --------------------------------------------------------------------------------------------------- mapping
def record_from_mapping(mapping: Mapping[str, Any]) -> RunRecord:
    """A ``RunRecord`` from a possibly partial record-shaped dict: absent fields are ``None``, types
    coerced."""
    values = {name: _coerce(kind, mapping.get(name)) for name, kind in _RECORD_TYPES.items()}
    values.pop("schema_version")
    values["axes"] = dict(mapping.get("axes") or {})
    for name in _DICT_FIELDS:
        values[name] = {str(k): _coerce("float", v) for k, v in (mapping.get(name) or {}).items()}
    values["wandb"] = dict(mapping.get("wandb") or {})
    return RunRecord(**values)


def record_like_to_row(
    mapping: Mapping[str, Any] | RunRecord, *, loss_metric: str = "test_loss", n_definition: str = "total"
) -> dict[str, Any]:
    """One tidy row from a record-shaped dict (``RunRecord.to_dict()`` keys) or a ``RunRecord``.

    Delegates to ``runs.record_row`` so that records, W&B runs and anything record-shaped
    share one mapping. Missing fields give ``None`` (NaN in a frame), not errors: a W&B summary may lack
    optional keys.
    """
    _check_options(loss_metric, n_definition)
    record = mapping if isinstance(mapping, RunRecord) else record_from_mapping(mapping)
    return record_row(record, loss_metric=loss_metric, n_definition=n_definition)


def _check_options(loss_metric: str, n_definition: str) -> None:
    if loss_metric not in LOSS_METRICS:
        raise ValueError(f"loss_metric={loss_metric!r}: must be one of {list(LOSS_METRICS)}")
    if n_definition not in N_DEFINITIONS:
        raise ValueError(f"n_definition={n_definition!r}: must be one of {list(N_DEFINITIONS)}")


# --------------------------------------------------------------------------------------------------- W&B
def wandb_axes(tags: Iterable[str] | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """Swept values of a run: config ``run.axes``, then config ``study.axes``, then ``name=value`` tags.

    The config holds typed values; tags are strings cut at 64 characters (W&B's limit), so they come last.
    """
    axes: dict[str, Any] = {}
    run_axes = _dotted_get(config, "run.axes")
    for name, value in (run_axes if isinstance(run_axes, Mapping) else {}).items():
        axes[str(name)] = value
    for dotted in _dotted_get(config, "study.axes") or ():
        axes.setdefault(str(dotted).rsplit(".", 1)[-1], _dotted_get(config, str(dotted)))
    for tag in tags or ():
        name, sep, value = str(tag).partition("=")
        if sep and name.strip():
            axes.setdefault(name.strip(), _parse_tag_value(value.strip()))
    return dict(sorted(axes.items()))  # tag order means nothing; records come back from JSON with sorted keys


def wandb_run_to_record_like(run: Any) -> dict[str, Any]:
    """A record-shaped dict from a W&B public-API run (uses ``.id .group .state .tags .config .summary``).

    ``status`` is the record status the tracker put in the summary (``done``/``failed``), else ``done`` for a
    finished run and the W&B state otherwise; record-named summary keys win over metric-named ones
    (``test/loss``, ``test/<d>/loss`` ...).
    """
    summary = _plain(run.summary) or {}
    config = _plain(run.config) or {}
    status = summary.get("status") if isinstance(summary.get("status"), str) else None
    record: dict[str, Any] = {
        "run_id": run.id,
        "study": run.group or _dotted_get(config, "study.name"),
        "status": status or ("done" if run.state == "finished" else run.state),
        "axes": wandb_axes(run.tags, config),
        "seed": config.get("seed"),
        "config": config,
        "wandb": {"id": run.id, "group": run.group, "state": run.state},
    }
    for name in _RECORD_FIELDS:
        if name in _NOT_FROM_SUMMARY or name in _DICT_FIELDS:
            continue
        for key in SUMMARY_ALIASES.get(name, (name,)):
            if not _is_missing(summary.get(key)) and not isinstance(summary.get(key), Mapping):
                record[name] = summary[key]
                break
    for name in _DICT_FIELDS:
        if isinstance(summary.get(name), Mapping):
            record[name] = dict(summary[name])
    for key, value in summary.items():
        match = _DOMAIN_KEY.match(key)
        if not match:
            continue
        for name, pattern in SUMMARY_DOMAIN_PATTERNS.items():
            if pattern.format(d=match["domain"]) == key and not isinstance(summary.get(name), Mapping):
                record.setdefault(name, {})[match["domain"]] = value
    return record


def load_wandb_runs(
    path: str,
    *,
    group: str | None = None,
    filters: dict[str, Any] | None = None,
    api: Any = None,
    loss_metric: str = "test_loss",
    n_definition: str = "total",
) -> pd.DataFrame:
    """Tidy table of the finished runs of a W&B project ``entity/project``, optionally one study (``group``).

    Needs a W&B account and network unless ``api`` is given: ``api`` defaults to ``wandb.Api()``, and only
    ``api.runs(path, filters=...)`` is used (``filters``: the public API's MongoDB-style query; ``group`` is
    added to it). Runs that are not ``finished``, whose summary ``status`` is not ``done``, that lack any of
    :data:`REQUIRED_SUMMARY_KEYS` or have a non-finite loss are dropped, each with its reason, in
    ``df.attrs["preprocessing"]["steps"]``.
    """
    if path.count("/") != 1 or not all(path.split("/")):
        raise ValueError(f"path={path!r}: must be 'entity/project'")
    _check_options(loss_metric, n_definition)  # before any network
    query = dict(filters or {})
    if group is not None:
        query["group"] = group
    if api is None:
        import wandb  # lazily: importing wandb takes ~1 s and only this path talks to W&B

        api = wandb.Api()
    rows: list[dict[str, Any]] = []
    dropped: dict[str, list[dict[str, Any]]] = {}
    n_found = 0
    # wandb.Api().runs is lazy by default: every run's config/summary would then cost one more request
    eager = {"lazy": False} if "lazy" in inspect.signature(api.runs).parameters else {}
    for run in api.runs(path, filters=query, **eager):
        n_found += 1
        rule, reason, row = _classify(run, group, loss_metric, n_definition)
        if row is not None:
            rows.append(row)
        else:
            dropped.setdefault(rule, []).append({"run_id": run.id, "state": run.state, "reason": reason})
    if rows:
        frame = pd.DataFrame(rows)
    else:  # same columns as a table with rows, so that callers can inspect it
        frame = pd.DataFrame(columns=list(record_like_to_row({"status": "done"}).keys()))
    frame = set_dtypes(frame)
    if len(frame):
        frame = frame.sort_values(["U", "seed", "run_id"], kind="stable").reset_index(drop=True)
    frame.attrs["preprocessing"] = {
        "source": "wandb",
        "path": path,
        "group": group,
        "filters": query,
        "loss_metric": loss_metric,
        "n_definition": f"{n_definition} ({N_DEFINITIONS[n_definition]})",
        "n_runs_found": n_found,
        "n_rows_raw": n_found,
        "n_rows": len(frame),
        "steps": [
            {"rule": rule, "n_dropped": len(runs), "runs": runs} for rule, runs in sorted(dropped.items())
        ],
    }
    return frame


def _classify(
    run: Any, group: str | None, loss_metric: str, n_definition: str
) -> tuple[str, str, dict[str, Any] | None]:
    """(drop rule, reason, None) for a run that cannot be fitted, else ("", "", tidy row)."""
    if run.state != "finished":
        return "drop_not_finished", f"state={run.state}: only finished runs have final summaries", None
    if group is not None and run.group != group:
        return "drop_other_group", f"group={run.group!r} is not {group!r}", None
    record = wandb_run_to_record_like(run)
    if record["status"] != "done":
        return "drop_not_done", f"record status={record['status']} in the summary", None
    missing = [k for k in REQUIRED_SUMMARY_KEYS if _is_missing(record.get(k))]
    if missing:
        return "drop_incomplete_summary", f"summary lacks {', '.join(missing)}", None
    row = record_like_to_row(record, loss_metric=loss_metric, n_definition=n_definition)
    loss = row["loss"]
    if not isinstance(loss, int | float) or isinstance(loss, bool) or not math.isfinite(loss):
        return "drop_nonfinite_loss", f"{loss_metric}={loss!r} is not a finite number", None
    return "", "", row
