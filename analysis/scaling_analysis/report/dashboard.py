"""A W&B workspace (saved dashboard) for one study, built with ``wandb-workspaces``.

The dashboard is data first: :func:`workspace_spec` returns a plain, JSON-serialisable description (written to
``<study_dir>/dashboard.json`` so that it is versioned and reviewable next to the study's results), and
:func:`workspace_from_spec` turns it into ``wandb_workspaces`` objects. Building the objects is pure and
offline; only :func:`save_workspace` (``Workspace.save()``) talks to W&B and needs an account.

Metric names follow docs/design.md ("Metric names"): curves use the history metrics (``val/<domain>/loss``,
``val/loss``, ``val/<domain>/bpb``, ``train/loss``, ``train/lr``) against ``tokens_seen``; scatter plots and
the run table use run summaries, which the tracker sets to the record fields (``unique_tokens``,
``test_loss`` ...) and the test metrics (``test/<domain>/loss``, ``test/<domain>/bpb``).

``python -m scaling_analysis.report.dashboard --help``. ``wandb-workspaces`` (the ``dashboards`` extra) is
imported only when a workspace is built, so the spec and the CLI's ``--dry-run`` work without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from datascale.records import atomic_write_json, find_records

if TYPE_CHECKING:
    import wandb_workspaces.workspaces as ws

SPEC_FORMAT = "datascale.dashboard/1"
SPEC_FILENAME = "dashboard.json"
X_AXIS = "tokens_seen"
#: Summary keys shown as run-table columns (record field names, set as W&B summary by the tracker).
RUN_TABLE_COLUMNS: tuple[str, ...] = (
    "unique_tokens",
    "tokens_seen",
    "epochs",
    "converged",
    "best_val_loss",
    "test_loss",
)
#: Runs drawn per panel; W&B's default (10) would hide most runs of a study.
DEFAULT_MAX_RUNS = 100


# --------------------------------------------------------------------------------------------------- spec
def _line(title: str, y: Sequence[str], *, x: str = X_AXIS, log_x: bool = True, log_y: bool = False) -> dict:
    return {"type": "line", "title": title, "x": x, "y": list(y), "log_x": log_x, "log_y": log_y}


def _scatter(title: str, x: str, y: str) -> dict:
    """Log-log scatter of two summary metrics: one point per run, the shape a scaling fit sees."""
    return {"type": "scatter", "title": title, "x": x, "y": y, "log_x": True, "log_y": True}


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}={value!r}: must be a non-empty string")
    # wandb-workspaces 0.4.13 serialises run filters as an unescaped Python-like string: a ' or \ breaks it
    if what == "study" and ("'" in value or "\\" in value):
        raise ValueError(f"study={value!r}: W&B workspace filters cannot hold ' or \\ in a group name")
    return value


def workspace_spec(
    entity: str,
    project: str,
    study: str,
    domains: Iterable[str],
    *,
    name: str | None = None,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> dict[str, Any]:
    """The study's dashboard as plain data (JSON-serialisable, deterministic for the same arguments)."""
    for what, value in (("entity", entity), ("project", project), ("study", study)):
        _check_name(what, value)
    domains = list(dict.fromkeys(_check_name("domain", d) for d in domains))
    if not domains:
        raise ValueError("domains=[]: give at least one evaluation domain")
    if not isinstance(max_runs, int) or max_runs < 1:
        raise ValueError(f"max_runs={max_runs!r}: must be a positive integer")
    sections = [
        {
            "name": "Validation loss per domain",
            "panels": [_line(f"val/{d}/loss vs tokens seen", [f"val/{d}/loss"]) for d in domains],
        },
        {
            "name": "Validation loss",
            "panels": [
                _line("val/loss (macro mean over domains) vs tokens seen", ["val/loss"]),
                _line("val/loss vs epochs (passes over the subset)", ["val/loss"], x="epochs"),
            ],
        },
        {
            "name": "Test loss vs unique tokens",
            "panels": [
                _scatter("test_loss vs unique_tokens", "unique_tokens", "test_loss"),
                _scatter("best_val_loss vs unique_tokens", "unique_tokens", "best_val_loss"),
                _scatter("test_loss vs tokens_seen", "tokens_seen", "test_loss"),
                *(
                    _scatter(f"test/{d}/loss vs unique_tokens", "unique_tokens", f"test/{d}/loss")
                    for d in domains
                ),
            ],
        },
        {
            "name": "Bits per byte",
            "panels": [
                *(_line(f"val/{d}/bpb vs tokens seen", [f"val/{d}/bpb"]) for d in domains),
                *(
                    _scatter(f"test/{d}/bpb vs unique_tokens", "unique_tokens", f"test/{d}/bpb")
                    for d in domains
                ),
            ],
        },
        {
            "name": "Training",
            "panels": [
                _line("train/loss vs tokens seen", ["train/loss"]),
                _line("train/lr vs tokens seen", ["train/lr"], log_x=False),
            ],
        },
    ]
    return {
        "format": SPEC_FORMAT,
        "study": study,
        "domains": domains,
        "entity": entity,
        "project": project,
        "name": name or f"datascale: {study}",
        "x_axis": X_AXIS,
        "max_runs": max_runs,
        "filters": {"group": study},
        "order": [{"summary": "unique_tokens", "ascending": True}],
        "run_table": list(RUN_TABLE_COLUMNS),
        "sections": [{**s, "is_open": True} for s in sections],
    }


def write_spec(spec: Mapping[str, Any], study_dir: Path | str) -> Path:
    """Write ``<study_dir>/dashboard.json`` atomically (sorted keys, so diffs show real changes only)."""
    path = Path(study_dir) / SPEC_FILENAME
    atomic_write_json(path, dict(spec))
    return path


def read_spec(path: Path | str) -> dict[str, Any]:
    """A spec written by :func:`write_spec` (a directory means its ``dashboard.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILENAME
    spec = json.loads(path.read_text())
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"{path}: format={spec.get('format')!r}, expected {SPEC_FORMAT!r}")
    return spec


# --------------------------------------------------------------------------------------------------- objects
def _workspaces() -> tuple[Any, Any]:
    try:
        with warnings.catch_warnings():  # its pydantic-v1-style validators warn on import; not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            import wandb_workspaces.reports.v2 as wr
            import wandb_workspaces.workspaces as ws
    except ImportError as exc:  # optional dependency: the `dashboards` extra
        raise ImportError(
            "building a W&B workspace needs wandb-workspaces: pip install -e '.[dashboards]'"
        ) from exc
    return ws, wr


def workspace_from_spec(spec: Mapping[str, Any]) -> ws.Workspace:
    """``wandb_workspaces`` objects for a spec; pure and offline (nothing is sent until ``.save()``)."""
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(f"spec format={spec.get('format')!r}, expected {SPEC_FORMAT!r}")
    ws, wr = _workspaces()

    def panel(p: Mapping[str, Any]) -> Any:
        if p["type"] == "line":
            return wr.LinePlot(title=p["title"], x=p["x"], y=list(p["y"]), log_x=p["log_x"], log_y=p["log_y"])
        if p["type"] == "scatter":
            return wr.ScatterPlot(
                title=p["title"],
                x=wr.SummaryMetric(p["x"]),
                y=wr.SummaryMetric(p["y"]),
                log_x=p["log_x"],
                log_y=p["log_y"],
            )
        raise ValueError(f"panel type={p['type']!r}: must be 'line' or 'scatter'")

    group = _check_name("study", spec["filters"]["group"])
    return ws.Workspace(
        entity=spec["entity"],
        project=spec["project"],
        name=spec["name"],
        sections=[
            ws.Section(
                name=s["name"],
                panels=[panel(p) for p in s["panels"]],
                is_open=s["is_open"],
                panel_settings=ws.SectionPanelSettings(x_axis=spec["x_axis"]),
            )
            for s in spec["sections"]
        ],
        settings=ws.WorkspaceSettings(x_axis=spec["x_axis"], max_runs=spec["max_runs"]),
        runset_settings=ws.RunsetSettings(
            filters=ws.And(ws.Metric("Group") == group),
            order=[ws.Ordering(ws.Summary(o["summary"]), ascending=o["ascending"]) for o in spec["order"]],
            pinned_columns=[f"summary:{c}" for c in spec["run_table"]],
        ),
    )


def build_workspace(
    entity: str,
    project: str,
    study: str,
    domains: Iterable[str],
    *,
    name: str | None = None,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> ws.Workspace:
    """The study's workspace (entity/project, runs of W&B group ``study``); pure and offline."""
    return workspace_from_spec(workspace_spec(entity, project, study, domains, name=name, max_runs=max_runs))


def describe_workspace(workspace: ws.Workspace) -> dict[str, Any]:
    """Read a workspace object back into the spec's layout (everything but ``format``/``study``/``domains``).

    Inspects the ``wandb_workspaces`` objects themselves, so ``describe_workspace(workspace_from_spec(s))``
    equal to ``s`` shows that every part of the spec reached the objects ``.save()`` would send.
    """
    from wandb_workspaces import expr

    _, wr = _workspaces()

    def name_of(metric: Any) -> str:
        return metric if isinstance(metric, str) else metric.name

    def panel(p: Any) -> dict[str, Any]:
        kind = "line" if isinstance(p, wr.LinePlot) else "scatter" if isinstance(p, wr.ScatterPlot) else None
        if kind is None:
            raise ValueError(f"unexpected panel {type(p).__name__}")
        if kind == "scatter" and not all(isinstance(a, wr.SummaryMetric) for a in (p.x, p.y)):
            raise ValueError(f"scatter {p.title!r}: axes must be summary metrics")
        y = [name_of(m) for m in p.y] if kind == "line" else name_of(p.y)
        return {"type": kind, "title": p.title, "x": name_of(p.x), "y": y, "log_x": p.log_x, "log_y": p.log_y}

    filters: dict[str, Any] = {}
    for f in expr.string_to_filterexpr_list(cast(str, workspace.runset_settings.filters)):
        if not (isinstance(f.key, expr.Metric) and f.key.name == "Group" and f.op in ("=", "==")):
            raise ValueError(f"unexpected runset filter {f!r}")
        filters["group"] = f.value
    pinned = workspace.runset_settings.pinned_columns
    return {
        "entity": workspace.entity,
        "project": workspace.project,
        "name": workspace.name,
        "x_axis": workspace.settings.x_axis,
        "max_runs": workspace.settings.max_runs,
        "filters": filters,
        "order": [
            {"summary": o.item.name, "ascending": o.ascending}
            for o in workspace.runset_settings.order
            if isinstance(o.item, expr.Summary)
        ],
        "run_table": [c.removeprefix("summary:") for c in pinned if c.startswith("summary:")],
        "sections": [
            {"name": s.name, "panels": [panel(p) for p in s.panels], "is_open": s.is_open}
            for s in workspace.sections
        ],
    }


def save_workspace(spec_or_workspace: Mapping[str, Any] | ws.Workspace) -> str:
    """Create the workspace in W&B and return its URL. Needs a W&B account and network; never called in tests.

    Each call creates a new saved view (``Workspace.save()`` on a fresh object); edit it in the app or delete
    the old one if you save twice.
    """
    workspace = (
        workspace_from_spec(spec_or_workspace)
        if isinstance(spec_or_workspace, Mapping)
        else spec_or_workspace
    )
    workspace.save()
    return str(workspace.url)


# --------------------------------------------------------------------------------------------------- CLI
def _from_records(study_dir: Path) -> tuple[str | None, list[str]]:
    """Study name and evaluation domains of the finished runs below ``study_dir`` (for CLI defaults)."""
    records = find_records(study_dir)
    studies = sorted({r.study for r in records})
    domains = sorted({d for r in records for d in (r.eval_domains or [])})
    return (studies[0] if len(studies) == 1 else None), domains


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scaling_analysis.report.dashboard",
        description="Build the W&B workspace of a study; write it as dashboard.json and/or save it to W&B. "
        "Saving needs a W&B account (WANDB_API_KEY) and network; --dry-run works offline.",
    )
    parser.add_argument(
        "--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity (env WANDB_ENTITY)"
    )
    parser.add_argument(
        "--project", default=os.environ.get("WANDB_PROJECT"), help="W&B project (env WANDB_PROJECT)"
    )
    parser.add_argument(
        "--study", help="study name = W&B group (default: the study of --study-dir's records)"
    )
    parser.add_argument(
        "--domains", nargs="+", help="evaluation domains (default: eval_domains of --study-dir's records)"
    )
    parser.add_argument("--name", help="workspace name (default: 'datascale: <study>')")
    parser.add_argument("--max-runs", type=int, default=DEFAULT_MAX_RUNS, help="runs drawn per panel")
    parser.add_argument(
        "--study-dir", type=Path, help="results/<study>: read defaults from it, write dashboard.json"
    )
    parser.add_argument("--spec", type=Path, help="use this dashboard.json instead of the arguments above")
    parser.add_argument("--dry-run", action="store_true", help="print the spec as JSON; do not save to W&B")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.spec is not None:
        spec = read_spec(args.spec)
    else:
        study, domains = args.study, args.domains
        if args.study_dir is not None and (study is None or not domains):
            found_study, found_domains = _from_records(args.study_dir)
            study, domains = study or found_study, domains or found_domains
        missing = [
            f"--{k}"
            for k, v in (("entity", args.entity), ("project", args.project), ("study", study))
            if not v
        ]
        if not domains:
            missing.append("--domains")
        if missing:
            parser.error(f"missing {', '.join(missing)} (or give --spec, or --study-dir with run records)")
        try:
            spec = workspace_spec(
                args.entity, args.project, study, domains, name=args.name, max_runs=args.max_runs
            )
        except ValueError as exc:
            parser.error(str(exc))
    if args.study_dir is not None:
        print(f"wrote {write_spec(spec, args.study_dir)}", file=sys.stderr)
    if args.dry_run:
        print(json.dumps(spec, indent=2, sort_keys=True))
        return 0
    print(save_workspace(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
