"""Packing runs onto the machine: jobs x threads follow the usable cores, and the default study uses them."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from datascale import CONF_DIR, SWEEPS_DIR
from datascale.orchestration.launch import sweep_job_overrides
from datascale.packing import packed_jobs, packed_threads, usable_cores
from datascale.run_id import run_identity


def compose_study(name: str, overrides: list[str] | None = None):
    with initialize_config_dir(str(SWEEPS_DIR), version_base="1.3"):
        return compose(
            name,
            overrides=[*(overrides or []), f"hydra.searchpath=[file://{CONF_DIR}]"],
            return_hydra_config=True,
        )


@pytest.mark.parametrize(
    ("cores", "ranks", "jobs"), [(2, 1, 2), (2, 2, 1), (16, 1, 16), (16, 4, 4), (1, 2, 1)]
)
def test_one_thread_per_rank_and_a_job_per_free_core(monkeypatch, cores: int, ranks: int, jobs: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert usable_cores() == cores and packed_threads() == 1
    assert packed_jobs(ranks) == jobs


def test_the_default_study_is_packed_by_the_machine_rule_in_sweep_order() -> None:
    cfg = compose_study("data_size")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == usable_cores() and cfg.worker.num_threads == 1
    sizes = [int(dict(o.split("=") for o in job)["subset.unique_tokens"]) for job in sweep_job_overrides(cfg)]
    # joblib starts jobs in this order: main grid smallest first, then the extra seeds, the largest size last
    largest = max(sizes)
    assert sizes[-sizes.count(largest) :] == [largest] * sizes.count(largest)
    assert [s for s in sizes if s != largest][:6] == sorted({s for s in sizes if s != largest})
    ddp = compose_study("data_size", ["strategy=ddp", "trainer.devices=2"])
    assert ddp.hydra.launcher.n_jobs == max(1, usable_cores() // 2)
    one_at_a_time = compose_study("data_size", ["hydra/launcher=basic", "worker.num_threads=null"])
    assert one_at_a_time.worker.num_threads is None


def test_threads_are_not_part_of_a_runs_identity() -> None:
    """How many cores a run uses does not change what it computes: a study resumed on another machine (or
    packed differently) finds its finished runs."""
    base = {"seed": 0, "worker": {"num_threads": 1, "compile": False}, "model": {"n_layer": 2}}
    other = {"seed": 0, "worker": {"num_threads": None, "compile": False}, "model": {"n_layer": 2}}
    assert run_identity(base, "h") == run_identity(other, "h")
    assert run_identity(base, "h") != run_identity(base | {"seed": 1}, "h")
