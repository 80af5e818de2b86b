"""The design sweeper: a main grid plus extra blocks, deduplicated, the largest value of one override last;
the same list validated before training (sweep_job_overrides) and launched (basic and joblib launchers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from study_cli import launch_study

from datascale import CONF_DIR, SWEEPS_DIR
from datascale.config_errors import ConfigError
from datascale.orchestration.launch import resolved_config, sweep_job_overrides
from datascale.orchestration.sweeper import design_batches, expand_design
from datascale.records import find_records

GRID = {
    "params": {"size": "1,2,4", "seed": "0"},
    "extra": [{"size": "1,2", "seed": "1,2"}, {"seed": "0,1"}],
    "order_last": "size",
}
EXPECTED = [
    ["size=1", "seed=0"],
    ["size=2", "seed=0"],
    ["size=1", "seed=1"],
    ["size=1", "seed=2"],
    ["size=2", "seed=1"],
    ["size=2", "seed=2"],
    ["size=4", "seed=0"],  # the largest size last, after the extra seeds
    ["size=4", "seed=1"],  # the second block adds seed 1 at every size; its largest size also goes last
]


def test_design_is_the_union_of_the_grids_deduplicated_with_the_largest_value_last():
    assert expand_design(GRID) == EXPECTED
    assert design_batches(EXPECTED, "size", None) == [EXPECTED[:6], EXPECTED[6:]]
    assert design_batches(EXPECTED, "size", 4) == [EXPECTED[:4], EXPECTED[4:6], EXPECTED[6:]]
    # without extra blocks or order: Hydra's basic sweeper, the command line's sweep replacing the file's
    assert expand_design({"params": GRID["params"]}, ["seed=5,6"]) == [
        [f"size={u}", f"seed={s}"] for u in (1, 2, 4) for s in (5, 6)
    ]
    # the command line applies to every block: here the blocks add nothing new
    assert expand_design(GRID, ["seed=7"]) == [
        ["size=1", "seed=7"],
        ["size=2", "seed=7"],
        ["size=4", "seed=7"],
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**GRID, "order_last": "depth"}, "hydra.sweeper.order_last='depth': must be one of"),
        ({"params": {"name": "a,b"}, "order_last": "name"}, "must name an override with numeric values"),
        ({**GRID, "extra": ["seed=1"]}, "hydra.sweeper.extra="),
    ],
)
def test_a_bad_design_fails_in_one_line(config, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        expand_design(config)


def _compose(directory: Path, study: str = "data_size"):
    with initialize_config_dir(str(directory), version_base="1.3"):
        overrides = [f"hydra.searchpath=[file://{CONF_DIR}]"]
        return compose(study, overrides=overrides, return_hydra_config=True)


def test_default_study_repeats_seeds_at_two_sizes_and_keeps_its_seven_points(tmp_path):
    jobs = [dict(o.split("=") for o in job) for job in sweep_job_overrides(_compose(SWEEPS_DIR))]
    sizes = [int(job["subset.unique_tokens"]) for job in jobs]
    seeds: dict[int, set[str]] = {}
    for size, job in zip(sizes, jobs, strict=True):
        seeds.setdefault(size, set()).add(job["seed"])
    assert sum(len(s) >= 3 for s in seeds.values()) >= 2
    assert sizes[-1] == max(sizes) and sizes.count(max(sizes)) == 1  # the target runs after everything else
    # the first seven points are the one-seed study's, composed exactly as before the extra blocks
    one_seed = tmp_path / "data_size.yaml"
    text = (SWEEPS_DIR / "data_size.yaml").read_text()
    one_seed.write_text(text.replace("  - override hydra/sweeper: design", "").split("    extra:")[0])
    before = sweep_job_overrides(_compose(tmp_path))
    assert len(before) == 7 and all(job in sweep_job_overrides(_compose(SWEEPS_DIR)) for job in before)
    for job in before:
        with initialize_config_dir(str(tmp_path), version_base="1.3"):
            old = compose("data_size", overrides=[*job, f"hydra.searchpath=[file://{CONF_DIR}]"])
        with initialize_config_dir(str(SWEEPS_DIR), version_base="1.3"):
            new = compose("data_size", overrides=[*job, f"hydra.searchpath=[file://{CONF_DIR}]"])
        assert resolved_config(old) == resolved_config(new)


APP = """
import json, os, sys, time
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path=".", config_name="design")
def app(cfg):
    start = time.time()
    time.sleep(0.3)
    job = HydraConfig.get().job
    record = {"num": job.num, "overrides": list(HydraConfig.get().overrides.task), "start": start,
              "end": time.time()}
    with open(os.path.join(sys.argv[-1].split("=", 1)[1], f"{job.num}.json"), "w") as f:
        json.dump(record, f)

if __name__ == "__main__":
    app()
"""


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_hydra_launches_the_design_in_order_with_either_launcher(tmp_path, launcher):
    """A real Hydra multirun (a trivial task: no training) through the plugin, the basic and the joblib
    launcher: the jobs launched are the expanded design, in order, the largest size after all others ended."""
    (tmp_path / "app.py").write_text(APP)
    study = {"defaults": [{"override hydra/sweeper": "design"}, "_self_"], "size": 0, "seed": 0, "out": ""}
    study["hydra"] = {"mode": "MULTIRUN", "sweep": {"dir": str(tmp_path / "multirun")}, "sweeper": GRID}
    (tmp_path / "design.yaml").write_text(json.dumps(study))  # JSON is YAML
    out = tmp_path / "jobs"
    out.mkdir()
    args = [f"hydra/launcher={launcher}"] + (["hydra.launcher.n_jobs=2"] if launcher == "joblib" else [])
    proc = subprocess.run(
        [sys.executable, "app.py", *args, f"out={out}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((json.loads(p.read_text()) for p in out.glob("*.json")), key=lambda r: r["num"])
    assert [[o for o in r["overrides"] if not o.startswith("out=")] for r in jobs] == EXPECTED
    others_end = max(r["end"] for r in jobs[:6])
    assert min(r["start"] for r in jobs[6:]) >= others_end


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=parallel"]], ids=["basic", "parallel"])
def test_a_tiny_design_study_trains_its_points_in_order(tmp_path, launcher: list[str]):
    """``datascale`` itself on the smoke study (gpt_tiny) with the design sweeper: a seed repeated at the
    small size, the large size last; every point validated, trained once, in the design's order."""
    design = [
        "hydra/sweeper=design",
        "hydra.sweeper.params={subset.unique_tokens: '2000,4000', seed: '0'}",
        "hydra.sweeper.extra=[{subset.unique_tokens: '2000', seed: '1'}]",
        "hydra.sweeper.order_last=subset.unique_tokens",
        "worker.num_threads=1",
        *launcher,
    ]
    proc = launch_study("smoke", tmp_path / "results", tmp_path / "cache", *design)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "checking 3 runs before training" in proc.stdout + proc.stderr
    records = sorted(find_records(tmp_path / "results" / "smoke"), key=lambda r: r.created_at)
    points = [(r.unique_tokens, r.seed) for r in records]
    assert sorted(points) == [(2000, 0), (2000, 1), (4000, 0)]
    assert points[-1] == (4000, 0)
