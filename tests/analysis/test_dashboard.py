"""The study's W&B workspace: built offline from a JSON spec, with the sections, metrics and filter we
promise.

``Workspace.save()`` (needs a W&B account) is never called. What is checked instead: the spec round-trips
through JSON and through the real ``wandb_workspaces`` objects, building needs no network, the metric
names are the ones docs/design.md and ``RunRecord`` define, and the wire model that ``.save()`` would
send holds the group filter, x-axis and run-table columns.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from scaling_analysis.report import dashboard
from scaling_analysis.report.dashboard import (
    RUN_TABLE_COLUMNS,
    build_workspace,
    describe_workspace,
    main,
    read_spec,
    workspace_from_spec,
    workspace_spec,
    write_spec,
)

from datascale.records import RunRecord, write_record

pytest.importorskip("wandb_workspaces")

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAINS = ["literature", "code", "science"]
SECTIONS = [
    "Validation loss per domain",
    "Validation loss",
    "Test loss vs unique tokens",
    "Bits per byte",
    "Training",
]


def design_metric_patterns() -> list[re.Pattern[str]]:
    """The metric names of docs/design.md ("Metric names"), ``<domain>`` as a wildcard."""
    text = (REPO_ROOT / "docs" / "design.md").read_text()
    section = text.split("## Metric names", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"`([^`]+)`", section)
    assert "val/<domain>/loss" in names and "tokens_seen" in names
    return [re.compile("^" + re.escape(n).replace(re.escape("<domain>"), "[^/]+") + "$") for n in names]


@pytest.fixture(scope="module")
def spec() -> dict:
    return workspace_spec("my-team", "datascale", "data_size", DOMAINS)


def test_spec_round_trips_through_json_and_the_workspace_objects(spec, tmp_path):
    assert json.loads(json.dumps(spec)) == spec
    path = write_spec(spec, tmp_path)
    assert path == tmp_path / "dashboard.json"
    loaded = read_spec(tmp_path)
    assert loaded == spec
    described = describe_workspace(workspace_from_spec(loaded))
    assert described == {k: v for k, v in spec.items() if k not in ("format", "study", "domains")}
    assert workspace_spec("my-team", "datascale", "data_size", DOMAINS) == spec  # deterministic


def test_workspace_sections_panels_and_filter(spec):
    workspace = build_workspace("my-team", "datascale", "data_size", DOMAINS)
    assert (workspace.entity, workspace.project) == ("my-team", "datascale")
    assert [s.name for s in workspace.sections] == SECTIONS
    assert all(s.is_open for s in workspace.sections)
    by_name = {s.name: s for s in workspace.sections}

    per_domain = by_name["Validation loss per domain"].panels
    assert [(type(p).__name__, p.x, p.y) for p in per_domain] == [
        ("LinePlot", "tokens_seen", [f"val/{d}/loss"]) for d in DOMAINS
    ]
    assert [(p.x, p.y) for p in by_name["Validation loss"].panels] == [
        ("tokens_seen", ["val/loss"]),
        ("epochs", ["val/loss"]),
    ]

    scatter = by_name["Test loss vs unique tokens"].panels[0]
    assert type(scatter).__name__ == "ScatterPlot"
    assert (scatter.x.name, scatter.y.name, scatter.log_x, scatter.log_y) == (
        "unique_tokens",
        "test_loss",
        True,
        True,
    )
    assert {p.y.name for p in by_name["Test loss vs unique tokens"].panels} >= {
        f"test/{d}/loss" for d in DOMAINS
    }

    bpb = by_name["Bits per byte"].panels
    assert {p.y[0] for p in bpb if type(p).__name__ == "LinePlot"} == {f"val/{d}/bpb" for d in DOMAINS}
    assert {p.y.name for p in bpb if type(p).__name__ == "ScatterPlot"} == {f"test/{d}/bpb" for d in DOMAINS}
    assert [p.y for p in by_name["Training"].panels] == [["train/loss"], ["train/lr"]]

    assert workspace.settings.x_axis == "tokens_seen"
    assert workspace.settings.max_runs == dashboard.DEFAULT_MAX_RUNS
    assert workspace.runset_settings.pinned_columns == ["run:displayName"] + [
        f"summary:{c}" for c in RUN_TABLE_COLUMNS
    ]
    assert list(RUN_TABLE_COLUMNS) == [
        "unique_tokens",
        "tokens_seen",
        "epochs",
        "converged",
        "best_val_loss",
        "test_loss",
    ]


def test_wire_model_has_group_filter_axis_and_columns():
    """The (private) wire model ``.save()`` would upsert: what the W&B app will actually read."""
    wire = build_workspace("my-team", "datascale", "data_size", DOMAINS)._spec
    section = wire["spec"]["section"]
    runset = section["runSets"][0]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": "data_size", "disabled": False}
    ]
    assert runset["sort"]["keys"] == [
        {"key": {"section": "summary", "name": "unique_tokens"}, "ascending": True}
    ]
    assert runset["runFeed"]["columnOrder"][1:] == [f"summary:{c}" for c in RUN_TABLE_COLUMNS]
    assert section["settings"]["xAxis"] == "tokens_seen"
    panels = {
        p["config"]["chartTitle"]: p for s in section["panelBankConfig"]["sections"] for p in s["panels"]
    }
    scatter = panels["test_loss vs unique_tokens"]
    assert scatter["viewType"] == "Scatter Plot"
    assert (scatter["config"]["xAxis"], scatter["config"]["yAxis"]) == (
        "summary:unique_tokens",
        "summary:test_loss",
    )
    assert scatter["config"]["xAxisLogScale"] and scatter["config"]["yAxisLogScale"]
    line = panels["val/literature/loss vs tokens seen"]
    assert line["viewType"] == "Run History Line Plot"
    assert (line["config"]["xAxis"], line["config"]["metrics"]) == ("tokens_seen", ["val/literature/loss"])


def test_metric_names_are_the_contract_names(spec):
    """Curves use design.md metric names; scatter axes and table columns are record fields or test metrics."""
    patterns = design_metric_patterns()
    record_fields = {f.name for f in fields(RunRecord)}
    panels = [p for s in spec["sections"] for p in s["panels"]]
    for panel in panels:
        if panel["type"] == "line":
            names = [panel["x"], *panel["y"]]
            assert all(any(p.match(n) for p in patterns) for n in names), panel
        else:
            for name in (panel["x"], panel["y"]):
                assert name in record_fields or any(p.match(name) for p in patterns), panel
    assert set(spec["run_table"]) <= record_fields


def test_building_needs_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access while building a workspace")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    workspace = build_workspace("e", "p", "s", ["code"])
    assert workspace._spec["entity"] == "e"  # the full wire model, still offline


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="domains"):
        workspace_spec("e", "p", "s", [])
    with pytest.raises(ValueError, match="study"):
        workspace_spec("e", "p", "it's", ["code"])  # wandb-workspaces cannot quote it in a filter
    with pytest.raises(ValueError, match="max_runs"):
        workspace_spec("e", "p", "s", ["code"], max_runs=0)
    with pytest.raises(ValueError, match="format"):
        workspace_from_spec({"format": "something else"})
    assert workspace_spec("e", "p", "s", ["code", "code"])["domains"] == ["code"]


def test_cli_dry_run_prints_and_writes_the_spec(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(dashboard, "save_workspace", lambda *a: pytest.fail("dry run must not save"))
    args = ["--entity", "e", "--project", "p", "--study", "data_size", "--domains", "code", "literature"]
    assert main([*args, "--dry-run", "--study-dir", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == workspace_spec("e", "p", "data_size", ["code", "literature"])
    assert read_spec(tmp_path / "dashboard.json") == printed
    assert main(["--spec", str(tmp_path / "dashboard.json"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == printed


def test_cli_takes_study_and_domains_from_records(tmp_path, capsys):
    """``--study-dir`` alone gives the study name and the evaluation domains of its finished runs."""
    for run_id, domains in (("a1", ["code", "literature"]), ("b2", ["code", "science"])):
        values = {
            f.name: None for f in fields(RunRecord) if f.name not in ("wandb", "error", "schema_version")
        }
        values.update(run_id=run_id, study="data_size", status="done", eval_domains=domains)
        write_record(tmp_path / "runs" / run_id, RunRecord(**values))
    assert main(["--entity", "e", "--project", "p", "--study-dir", str(tmp_path), "--dry-run"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert (spec["study"], spec["domains"]) == ("data_size", ["code", "literature", "science"])
    assert (tmp_path / "dashboard.json").is_file()


def test_cli_reports_missing_arguments(capsys, monkeypatch):
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["--project", "p", "--study", "s", "--dry-run"])
    assert exc.value.code == 2
    assert "missing --entity, --domains" in capsys.readouterr().err


def test_module_help_runs_without_torch_wandb_or_workspaces():
    out = subprocess.run(
        [sys.executable, "-m", "scaling_analysis.report.dashboard", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--dry-run" in out.stdout
    code = (
        "import sys, scaling_analysis.report.dashboard\n"
        "bad = [m for m in ('torch', 'wandb', 'wandb_workspaces') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
