"""``python -m scaling_analysis PATH``: fit, plot and report a study directory or a results table.

Bad input (missing path, no records, unknown column or law) ends with exit status 2 and one line on stderr
naming what is wrong, so that ``make analyze`` fails clearly instead of with a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .study import StudyAnalysis

EXIT_BAD_INPUT = 2
EXIT_FIT_FAILED = 1

EPILOG = """examples:
  python -m scaling_analysis results/data_size
  python -m scaling_analysis results/data_size --loss-metric best_val_loss --resamples 200
  python -m scaling_analysis chinchilla.csv --law chinchilla \\
      --columns 'Model Size=N,Training FLOP=C,loss=loss' --derive 'D=C/(6*N)' --drop-highest 5
  python -m scaling_analysis openlm.csv --law chinchilla --columns 'N=N,D=D,loss=loss' \\
      --collapse-min-over peak_lr

outputs (in the study dir, or --out): runs.parquet, fit.json, report.md, scaling_curve.png, residuals.png,
law_comparison.png (isoflop.png for laws of N and D).
"""


DEFAULT_LAW = "saturating_power_D"


def build_parser() -> argparse.ArgumentParser:
    from .engine.laws import LAWS
    from .tables.runs import LOSS_METRICS

    p = argparse.ArgumentParser(
        prog="scaling-fit",
        description="Fit a scaling law to a study's run records (or a CSV/parquet of results), with "
        "bootstrap "
        "CIs, held-out extrapolation, law comparison, plots and a Markdown report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_args(p, LOSS_METRICS, LAWS)
    _add_table_args(p)
    _add_analysis_args(p)
    _add_preregister_args(p)
    return p


def _add_preregister_args(p: argparse.ArgumentParser) -> None:
    """A pre-registered prediction (the launcher runs this before a study's target sizes train)."""
    p.add_argument(
        "--preregister",
        action="store_true",
        help="fit every run but those at the target sizes, choose the law by the predictive tournament and"
        " write the prediction at the targets (prediction.json, write-once predictions/<hash12>.json); no"
        " report",
    )
    p.add_argument(
        "--targets",
        default=None,
        metavar="U,...",
        help="target sizes (unique tokens) for --preregister (default: the study file's"
        " analysis.predict.targets)",
    )


def _add_source_args(p: argparse.ArgumentParser, loss_metrics: Sequence[str], laws: Any) -> None:
    """What to read and which law to fit."""
    p.add_argument(
        "path", metavar="PATH", help="a study directory (runs/*/record.json) or a .csv/.tsv/.parquet file"
    )
    p.add_argument(
        "--law",
        default=None,
        choices=sorted(laws),
        help="law to fit and report (default: the study file's analysis.law, else the law the tournament "
        f"decided in advance chooses among --candidates, else {DEFAULT_LAW})",
    )
    p.add_argument(
        "--budget",
        type=float,
        action="append",
        default=None,
        metavar="FLOPS",
        help="compute budget C (FLOPs, C = 6ND): the compute-optimal N, D and loss with bootstrap intervals"
        " (Chinchilla-type laws; repeatable; default: the study file's analysis.budgets)",
    )
    p.add_argument(
        "--loss-metric",
        default="test_loss",
        choices=loss_metrics,
        help="record loss to fit, for study directories (default: %(default)s)",
    )
    p.add_argument(
        "--resamples",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples; 0 skips (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output directory (default: the study dir, or ./<table>_analysis)",
    )


def _add_table_args(p: argparse.ArgumentParser) -> None:
    """Mapping and recorded preprocessing of the table."""
    p.add_argument(
        "--columns",
        default=None,
        metavar="'col=var,...'",
        help="table column -> schema name, e.g. 'Model Size=N,Training FLOP=C,loss=loss' (tables only)",
    )
    p.add_argument(
        "--derive",
        action="append",
        default=[],
        metavar="NAME=EXPR",
        help="derived column from a pandas expression, e.g. 'D=C/(6*N)' (repeatable; tables only)",
    )
    p.add_argument(
        "--variables", default=None, metavar="'var=col,...'", help="law variable -> column, e.g. 'D=U'"
    )
    p.add_argument(
        "--drop-highest", type=int, default=0, metavar="K", help="drop the K highest-loss rows (recorded)"
    )
    p.add_argument(
        "--from-curves",
        action="store_true",
        help="fit every point of each run's learning curve (record val_curve: D = tokens seen) instead of one"
        " point per run; points of one run are not independent, and only schedule=wsd runs give honest ones",
    )
    p.add_argument(
        "--write-lr-rule",
        type=Path,
        default=None,
        metavar="YAML",
        help="write the fitted learning-rate rule (a study sweeping optim.lr at several sizes) to this Hydra"
        " leaf, e.g. conf/lr_rule/fitted.yaml, so that lr_rule=fitted uses it",
    )
    p.add_argument(
        "--collapse-min-over",
        default=None,
        metavar="COL",
        help="keep the lowest loss over a sweep column per (N, D, ...) cell, e.g. peak_lr (tables only)",
    )
    p.add_argument(
        "--exclude", default=None, metavar="QUERY", help="drop rows matching a pandas query, e.g. 'N < 1e8'"
    )


def _add_analysis_args(p: argparse.ArgumentParser) -> None:
    """Law comparison, held-out check and parallelism."""
    p.add_argument(
        "--candidates",
        default=None,
        metavar="LAW,...",
        help="laws of the tournament that chooses the law on the fitting points, held-out rows removed first "
        "('none' to skip; default: scaling_analysis.engine.compare.TOURNAMENT_CANDIDATES for one-variable "
        "studies)",
    )
    p.add_argument(
        "--holdout-by",
        default=None,
        metavar="COL",
        help="column whose largest values are held out (default: the law's variable; laws of N and D need "
        "one, "
        "e.g. C)",
    )
    p.add_argument(
        "--holdout-values",
        type=int,
        default=1,
        metavar="K",
        help="hold out the K largest distinct values (default: %(default)s)",
    )
    p.add_argument(
        "--n-definition",
        default=None,
        help="study dirs: total|non_embedding; tables: free text recorded as N's definition",
    )
    p.add_argument(
        "--holdout-above",
        type=float,
        default=None,
        metavar="X",
        help="hold out every row with --holdout-by >= X, e.g. 3e20 for C (Epoch's replication)",
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        metavar="F",
        help="hold out the largest fraction F of the distinct --holdout-by values, e.g. 0.25",
    )
    p.add_argument("--jobs", type=int, default=-1, help="processes for fits and bootstrap (-1: all CPUs)")
    _add_safety_args(p)


def _add_safety_args(p: argparse.ArgumentParser) -> None:
    """What to do with input the fitter cannot support."""
    p.add_argument(
        "--force",
        action="store_true",
        help="fit a table even when it cannot identify the law (too few points, constant loss or variable); "
        "the output is marked FORCED (study directories are always fitted and marked)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse rows whose loss is not a finite number instead of dropping (and listing) them",
    )
    p.add_argument(
        "--min-start-fraction",
        type=float,
        default=0.05,
        metavar="F",
        help="warn when fewer than this fraction of starts reach the optimum (default: %(default)s)",
    )


def _pairs(spec: str | None, what: str) -> dict[str, str]:
    from .tables.runs import parse_columns

    try:
        return parse_columns(spec)
    except ValueError as exc:
        raise ValueError(str(exc).replace("--columns", what)) from None


def _derive(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--derive {item!r}: expected NAME=EXPR, e.g. 'D=C/(6*N)'")
        name, expr = item.split("=", 1)
        out[name.strip()] = expr.strip()
    return out


def _candidates(spec: str | None) -> Sequence[str] | None:
    if spec is None:
        return None
    if spec.strip().lower() in ("", "none"):
        return ()
    return [c.strip() for c in spec.split(",") if c.strip()]


def _common(args: argparse.Namespace) -> dict[str, Any]:
    """Options shared by study directories and tables."""
    if args.holdout_above is not None and args.holdout_fraction is not None:
        raise ValueError("--holdout-above and --holdout-fraction: give one of them")
    return dict(
        law=args.law,  # None: not named, the tournament chooses
        n_resamples=args.resamples,
        seed=args.seed,
        n_jobs=args.jobs,
        variables=_pairs(args.variables, "--variables") or None,
        holdout_by=args.holdout_by,
        n_holdout_values=args.holdout_values,
        holdout_above=args.holdout_above,
        holdout_fraction=args.holdout_fraction,
        min_frac_at_optimum=args.min_start_fraction,
        strict=args.strict,
    )


def _run_study(path: Path, args: argparse.Namespace) -> StudyAnalysis:
    from .study import DEFAULT_CANDIDATES, analyze_study

    table_only = [
        name
        for name, val in (
            ("--columns", args.columns),
            ("--derive", args.derive),
            ("--collapse-min-over", args.collapse_min_over),
        )
        if val
    ]
    if table_only:
        raise ValueError(f"{', '.join(table_only)}: only for tables; {path} is a study directory")
    candidates = _candidates(args.candidates)
    defaults = study_analysis_defaults(path)
    args.law = args.law or defaults.get("law")
    budgets = args.budget or defaults.get("budgets")
    return analyze_study(
        path,
        out_dir=args.out,
        loss_metric=args.loss_metric,
        candidates=DEFAULT_CANDIDATES if candidates is None else candidates,
        n_definition=args.n_definition or "total",
        exclude_query=args.exclude,
        drop_highest=args.drop_highest,
        from_curves=args.from_curves,
        derived_targets={"C": [float(c) for c in budgets]} if budgets else None,
        **_common(args),
    )


def study_analysis_defaults(study_dir: Path) -> dict[str, Any]:
    """The ``analysis`` block of the study file (``law``, ``budgets``), as recorded in a run's config."""
    from datascale.records import CorruptRecordError, read_record

    for path in sorted(Path(study_dir).glob("runs/*/record.json")):
        try:
            return dict(read_record(path).config.get("analysis") or {})
        except CorruptRecordError:
            continue
    return {}


def _run_table(path: Path, args: argparse.Namespace) -> StudyAnalysis:
    from .study import analyze_table
    from .tables.runs import TABLE_SUFFIXES

    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"{path}: not a study directory or a table ({', '.join(TABLE_SUFFIXES)})")
    return analyze_table(
        path,
        columns=_pairs(args.columns, "--columns") or None,
        derived_columns=_derive(args.derive) or None,
        drop_highest=args.drop_highest,
        collapse_min_over=args.collapse_min_over,
        exclude_query=args.exclude,
        n_definition=args.n_definition,
        out_dir=args.out,
        candidates=_candidates(args.candidates),
        force=args.force,
        **_common(args),
    )


def write_back_lr_rule(result: StudyAnalysis, out: Path, target: Path) -> None:
    """Copy the study's fitted ``lr_rule.yaml`` to ``target`` (the ladder's ``lr_rule=fitted`` leaf)."""
    fields = result.fit_json.get("lr_rule") or {}
    if "rule" not in fields:
        raise ValueError(
            f"--write-lr-rule: no learning-rate rule fitted ({fields.get('skipped', 'no lr sweep')})"
        )
    edge = [c for c in fields["cells"] if c["at_grid_edge"]]
    if edge:
        where = ", ".join(f"N={c['N']:,}: {c['grid_best']:g}" for c in edge)
        raise ValueError(
            f"--write-lr-rule: the best learning rate lies at the edge of the searched grid ({where}); widen"
            " the grid (hydra.sweeper.params.optim.lr) before writing a rule"
        )
    Path(target).write_text((Path(out) / fields["leaf"]).read_text())
    print(f"learning-rate rule written to {target} (use lr_rule=fitted)", file=sys.stderr)


def run(args: argparse.Namespace) -> StudyAnalysis:
    """Dispatch on PATH: a directory is a study, a file is a results table."""
    path = Path(args.path)
    if path.is_dir():
        result = _run_study(path, args)
        if args.write_lr_rule is not None:
            write_back_lr_rule(result, args.out or path, args.write_lr_rule)
        return result
    if path.is_file():
        return _run_table(path, args)
    raise FileNotFoundError(f"{path}: no such study directory or table")


def _fit_table(fj: dict[str, Any]) -> Any:
    """Parameters and derived quantities with CIs, 6 significant digits."""
    from rich.table import Table

    from .render.text import short

    def g6(v: Any) -> str:
        return short(v, 6)

    t = Table(title="fit (6 significant digits; full precision in fit.json)", show_lines=False)
    for col in ("parameter", "estimate", f"{fj.get('confidence', 0.95):.0%} CI", "std. error"):
        t.add_column(col)
    for name, value in fj["params"].items():
        iv = fj["intervals"].get(name)
        t.add_row(
            name, g6(value), f"[{g6(iv[0])}, {g6(iv[1])}]" if iv else "—", g6(fj["std_errors"].get(name))
        )
    for name, d in (fj.get("derived") or {}).items():
        iv = d.get("interval")
        t.add_row(f"[dim]{name}[/dim]", g6(d.get("value")), f"[{g6(iv[0])}, {g6(iv[1])}]" if iv else "—", "")
    return t


def dropped_lines(fj: dict[str, Any], limit: int = 5) -> list[str]:
    """One console line per preprocessing step that dropped rows: rule, count, the first few rows."""
    from .tables.runs import describe_rows

    return [
        f"dropped {d['n_dropped']} row(s) by {d['rule']}: "
        f"{describe_rows(d.get('rows') or [], d['n_dropped'], limit)}"
        for d in fj.get("dropped") or []
    ]


def _checks_lines(fj: dict[str, Any]) -> list[str]:
    """Held-out check, seed floor, law tournament and headline law, one line each."""
    from .render.text import pct, short

    ho = fj.get("holdout") or {}
    if ho.get("skipped"):
        lines = [f"held-out extrapolation: skipped ({ho['skipped']})"]
    else:
        rule = ho.get("rule") or f"{ho.get('by')} ≥ {short(ho.get('threshold'))}"
        lines = [
            f"held-out extrapolation ({ho.get('n_test')} runs held out: {rule}; fit on {ho.get('n_train')}): "
            f"MAPE {pct(ho.get('mape'))}, max ARE {pct(ho.get('max_are'))}"
        ]
    noise = fj.get("seed_noise") or {}
    if noise.get("held_out_vs_floor"):
        lines.append(noise["held_out_vs_floor"])
    tour = fj.get("tournament") or {}
    if tour.get("skipped"):
        lines.append(f"law tournament: skipped ({tour['skipped']})")
    else:
        chosen = f"[bold]{tour.get('chosen')}[/bold]"
        lines.append(f"law tournament (decided in advance): chose {chosen}: {tour.get('reason')}")
    if (tour.get("headline") or {}).get("why"):
        lines.append(f"headline law: {tour['headline']['why']}")
    return lines


def print_summary(result: StudyAnalysis, console: Any = None) -> None:
    """A compact console view: parameters with CIs, held-out error, chosen law, verdict, warnings, outputs."""
    from rich.console import Console

    from .render.text import short
    from .steps import STUDY_STEPS
    from .tables.excluded import describe

    console = console or Console()
    fj = result.fit_json
    s = fj.get("summary", {})
    if fj.get("forced"):
        console.print(
            "[bold red]FORCED FIT: the data cannot identify this law; do not interpret it.[/bold red]"
        )
    console.print(
        f"[bold]{fj['law']}[/bold]: {fj['formula']}   "
        f"({s.get('n_runs')} runs, {s.get('n_sizes')} distinct {s.get('x', 'U')}, "
        f"{short(s.get('orders_of_magnitude'), 3)} orders of magnitude; loss = {fj.get('loss_metric')})"
    )
    for line in dropped_lines(fj):
        console.print(f"[yellow]{line}[/yellow]")
    for entry in fj.get("excluded_runs") or []:
        console.print(f"excluded (not fitted): {describe(entry)}", style="yellow", markup=False)
    console.print(_fit_table(fj))
    for line in _checks_lines(fj):
        console.print(line)
    check = fj.get("scaling_check") or {}
    style = "green" if check.get("looks_like_scaling") else "bold red"
    console.print(f"[{style}]{check.get('sentence', '')}[/{style}]")
    for w in (fj.get("diagnostics") or {}).get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")
    if fj.get("non_converged"):
        ids = ", ".join(r["run_id"] for r in fj["non_converged"])
        console.print(f"[yellow]not converged (token cap):[/yellow] {ids}")
    for step in STUDY_STEPS:  # the study steps' console lines, e.g. k per condition
        for line in step.console(fj):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    paths = result.paths
    if "report" in paths:
        console.print(f"report: {paths['report']}")
        console.print(f"outputs in {Path(paths['report']).parent}: {', '.join(fj.get('outputs', []))}")


def preregister_main(args: argparse.Namespace) -> int:
    """``--preregister``: write (or keep) the study's prediction and say which, on stdout."""
    from .report.prediction import preregister

    path = Path(args.path)
    if not path.is_dir():
        raise ValueError(f"--preregister: {path} is not a study directory")
    targets = [int(float(t)) for t in args.targets.split(",") if t.strip()] if args.targets else None
    result = preregister(
        path,
        targets,
        loss_metric=args.loss_metric,
        n_resamples=args.resamples,
        seed=args.seed,
        n_jobs=args.jobs,
    )
    what = "written" if result.created else "unchanged (same fitted inputs)"
    for row in result.prediction["predictions"]:
        lo, hi = row["interval"]
        iv = f"[{lo:.4f}, {hi:.4f}]" if lo is not None else "[no interval]"
        print(f"U={row['U']}: predicted {row['loss']:.4f} {iv} ({result.prediction['law']})", file=sys.stderr)
    print(f"prediction {what}: {result.path} sha256 {result.sha256}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m scaling_analysis`` and the ``scaling-fit`` script."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    from .tables.runs import NoRecordsError

    try:
        if args.preregister:
            return preregister_main(args)
        result = run(args)
    except (NoRecordsError, FileNotFoundError, ValueError, KeyError) as exc:
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"{parser.prog}: error: {msg.splitlines()[0] if msg else type(exc).__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as exc:  # the fit itself failed (e.g. no finite objective at any start)
        print(f"{parser.prog}: fit failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FIT_FAILED
    print_summary(result)
    return 0
