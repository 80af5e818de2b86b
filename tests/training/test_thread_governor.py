"""ThreadGovernor: a packed run takes the idle cores while the machine is quiet, one thread when not."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from datascale.training.callbacks import ThreadGovernor, machine_busy_seconds


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
