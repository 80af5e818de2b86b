"""One-process CPU runs forked from a preloaded parent (``datascale.orchestration.preload``): the child is
started like the worker subprocess it replaces (this run's environment, its own session, the entry's exit
status), takes forwarded signals, and gets SIGTERM when the Hydra job that started it dies. Which runs fork
(``forks_preloaded``). The records are compared with a fresh interpreter's in
tests/training/test_determinism.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datascale.orchestration.launch import RankTask, forks_preloaded
from datascale.orchestration.preload import start
from datascale.orchestration.supervise import ForwardedSignals, run_preloaded

ENTRY = "forked_entry"  # tests/forked_entry.py (tests/ is on the path the forked child inherits)


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_the_forked_child_runs_like_a_worker_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    env = {**os.environ, "FORKED_ENTRY_VALUE": "this run's"}
    returncode, signals = run_preloaded(ENTRY, [str(out), "exit"], env)
    seen = json.loads(out.read_text())
    assert returncode == 7 and signals.received is None  # main's return value is the exit status
    assert seen["value"] == "this run's" and seen["start"] == "fork"
    assert seen["sid"] == seen["pid"] != os.getpid()  # its own session: a terminal's Ctrl-C reaches us only
    assert seen["torch_preloaded"]  # the forkserver imported the worker (torch) before forking


def test_a_signal_to_the_job_reaches_the_forked_worker_as_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    proc = start(ENTRY, [str(out), "wait"], dict(os.environ))
    _wait_for(out)
    with ForwardedSignals(proc) as signals:
        os.kill(os.getpid(), signal.SIGUSR1)  # as submitit's preemption signal would
        returncode = proc.wait()
    assert signals.received == signal.SIGUSR1 and returncode == 75
    assert out.with_suffix(".stopped").read_text() == str(int(signal.SIGTERM))


def test_a_joblib_worker_forks_its_runs_too(tmp_path: Path) -> None:
    """The parallel launcher's jobs run in loky workers, whose default start method (``loky``) a forkserver
    child cannot set: the start stands in a stdlib one (a study's runs all failed without it)."""
    from forked_entry import fork_from_here
    from joblib import Parallel, delayed

    out = tmp_path / "seen.json"
    ((method, returncode),) = Parallel(n_jobs=2, backend="loky")([delayed(fork_from_here)(str(out))])
    assert method == "loky" and returncode == 7
    assert json.loads(out.read_text())["start"] == "fork"


LAUNCHER = """
import os, sys, time
from datascale.orchestration.preload import start
start("forked_entry", [sys.argv[1], "wait"], dict(os.environ))
print("started", flush=True)
time.sleep(120)
"""


def test_the_forked_worker_gets_sigterm_when_its_hydra_job_dies(tmp_path: Path) -> None:
    """SIGKILL of the launching process: its forkserver sees it gone and exits, and the child's parent-death
    signal (SIGTERM) makes it save and stop, as the worker under parent_guard does."""
    out = tmp_path / "seen.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(out)], env=env, stdout=subprocess.PIPE)
    try:
        _wait_for(out)
        launcher.kill()
        launcher.wait()
        _wait_for(out.with_suffix(".stopped"), timeout=20)
    finally:
        launcher.kill()
    assert out.with_suffix(".stopped").read_text() == str(int(signal.SIGTERM))


def _cfg(**values: object) -> object:
    base = {"trainer": {"accelerator": "cpu", "devices": 1, "num_nodes": 1}, "worker": {"preload": True}}
    cfg = OmegaConf.create(base)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize(
    ("values", "forks"),
    [
        ({}, True),
        ({"trainer.devices": 2}, False),  # torchrun
        ({"trainer.accelerator": "cuda"}, False),
        ({"worker.preload": False}, False),
    ],
)
def test_which_runs_fork_from_the_preloaded_parent(values: dict[str, object], forks: bool) -> None:
    assert forks_preloaded(_cfg(**values), None) is forks  # type: ignore[arg-type]


def test_a_task_per_rank_never_forks() -> None:
    task = RankTask(0, 1, 0, 1, 0, "localhost", 29500, "1")
    assert forks_preloaded(_cfg(), task) is False  # type: ignore[arg-type]
