"""ThreadGovernor: a packed run takes the idle cores while the machine is quiet, one thread when not."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from datascale.training.callbacks import PhaseClock, ThreadGovernor, TrainThroughput
from datascale.training.machine_load import machine_busy_seconds, others_load


class FakeMachine:
    """``/proc/stat``'s busy seconds: this process's own CPU time plus ``others`` cores of everyone else."""

    def __init__(self) -> None:
        self.others = 0.0
        self.busy = 0.0
        self.at = time.monotonic()

    def sample(self) -> float:
        now = time.monotonic()
        self.busy += self.others * (now - self.at)
        self.at = now
        return self.busy + time.process_time()


def check(governor: ThreadGovernor, step: int) -> None:
    time.sleep(0.02)
    governor.on_train_batch_end(SimpleNamespace(global_step=step))


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_quiet_machine_gets_every_core_and_a_busy_one_a_single_thread(restore_threads) -> None:
    machine = FakeMachine()
    governor = ThreadGovernor(base=1, most=2, every=10, sample=machine.sample)
    torch.set_num_threads(1)
    for step in (10, 20, 25, 30):  # first sample, then two quiet intervals (step 25: not a check)
        check(governor, step)
    assert governor.threads == 2 and torch.get_num_threads() == 2 and governor.changes == [(30, 2)]
    machine.others = 1.0  # another run (or a CPU-bound process) starts
    check(governor, 40)
    assert governor.threads == 1 and torch.get_num_threads() == 1 and governor.changes[-1] == (40, 1)
    machine.others = 0.0  # quiet again: up only after two quiet intervals
    check(governor, 50)
    assert governor.threads == 1
    check(governor, 60)
    assert governor.threads == 2
    assert 1.0 < governor.mean_threads < 2.0


def test_the_machine_counter_reads_proc_stat() -> None:
    first = machine_busy_seconds()
    assert first is None or first > 0


def test_clocks_restore_on_resume_but_not_when_the_best_checkpoint_is_tested() -> None:
    """Lightning restores callback states in ``trainer.test(ckpt_path=best)`` too: the clocks must not rewind
    to the best step (step_tokens_per_s and MFU read high whenever the best step was not the last)."""
    throughput, clock = TrainThroughput(), PhaseClock()
    throughput.load_state_dict({"seconds": 5.0, "batches": 10})  # a resume
    clock.load_state_dict({"eval_s": 2.0, "checkpoint_s": 0.5})
    assert (throughput.seconds, clock.eval_s) == (5.0, 2.0)
    throughput.seconds, clock.eval_s = 9.0, 4.0  # trained and evaluated on
    for callback in (throughput, clock):
        callback.on_fit_end()
    throughput.load_state_dict({"seconds": 7.0, "batches": 14})  # the best checkpoint's, while testing
    clock.load_state_dict({"eval_s": 3.0, "checkpoint_s": 0.5})
    assert (throughput.seconds, clock.eval_s) == (9.0, 4.0)


def test_others_load_is_the_rest_of_the_machine_over_the_block() -> None:
    """Machine CPU seconds over the block less this process's own, per wall second: what a peak measured in
    the block had to share the machine with."""
    samples = iter([100.0, 103.0])  # the machine used 3 CPU seconds during the block
    out: dict[str, float | None] = {}
    with others_load(out, sample=lambda: next(samples)):
        time.sleep(0.2)  # this process uses (almost) none of them
    assert out["others_cores"] is not None and 3.0 / 0.4 < out["others_cores"] <= 3.0 / 0.2
    missing: dict[str, float | None] = {}
    with others_load(missing, sample=lambda: None):
        pass
    assert missing["others_cores"] is None


def test_a_mid_run_thread_change_changes_float_summation_order_only(
    make_artifacts, tmp_path, monkeypatch, restore_threads
) -> None:
    """What ``worker.adaptive_threads`` guarantees: a run whose threads go from 1 to every core mid-run (the
    governor seeing a quiet machine) trains the same steps on the same data and stops at the same step as
    the same run on 1 thread throughout; its losses differ by float summation order only (within the 1e-5
    relative tolerance of the strategies' invariance, docs/scale-out.md), and its record lists the change."""
    import os

    from training_fixtures import resolved_config

    from datascale.training import worker

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable cores to change the thread count")
    quiet = FakeMachine()
    monkeypatch.setattr(
        worker, "ThreadGovernor", lambda base, most: ThreadGovernor(base, most, every=4, sample=quiet.sample)
    )
    artifacts = make_artifacts(2048)
    runs = {}
    for name, adaptive in (("fixed", False), ("adaptive", True)):
        path = resolved_config(
            tmp_path / name, artifacts, **{"worker.num_threads": 1, "worker.adaptive_threads": adaptive}
        )
        runs[name] = worker.run(path)
    fixed, adaptive = runs["fixed"], runs["adaptive"]
    assert fixed.thread_changes == [] and adaptive.thread_changes == [[12, len(os.sched_getaffinity(0))]]
    assert (adaptive.steps, adaptive.best_step, adaptive.tokens_seen) == (
        fixed.steps,
        fixed.best_step,
        fixed.tokens_seen,
    )
    for name in ("best_val_loss", "final_val_loss", "test_loss"):
        assert getattr(adaptive, name) == pytest.approx(getattr(fixed, name), rel=1e-5), name
    # its MFU is against the peak of the cores it held on average, not of its starting thread
    assert "scaled to the run's" in adaptive.peak_flops_source and 1.0 < adaptive.threads_mean < 2.0
    assert adaptive.peak_flops_per_s == pytest.approx(fixed.peak_flops_per_s * adaptive.threads_mean)
