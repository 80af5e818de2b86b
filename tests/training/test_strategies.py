"""The result does not depend on how a run is parallelised: DDP and FSDP at 2 ranks (torchrun subprocesses)
and 1 rank with gradient accumulation reproduce the single-process loss curve and record; checkpoints
round-trip in every strategy (FSDP: sharded directories, consolidated into one file for the plain model).

Tolerance: every loss of the record (best/final validation, test, per domain) and every step of the
training-loss curve within ``TOLERANCE`` (relative) of the single-process run; measured on the project's
machine: at most 3.5e-7 (DDP, FSDP, accumulation and both), i.e. float32 summation order, nothing more.
"""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from training_fixtures import resolved_config

from datascale import CONF_DIR
from datascale.artifacts import DataArtifacts
from datascale.data.token_cache import TokenCache
from datascale.model import GPT
from datascale.orchestration.launch import DISTRIBUTED_ENV, torchrun_command
from datascale.records import RunRecord, read_record
from datascale.training import worker
from datascale.training.checkpoints import is_sharded, load_gpt, load_sharded, model_state
from datascale.training.datamodule import IGNORE_INDEX, EvalWindows
from datascale.training.throughput import mfu

U = 2048
TOLERANCE = 1e-5
LOSS_FIELDS = ("best_val_loss", "final_val_loss", "test_loss")
DOMAIN_FIELDS = ("val_loss_best", "val_loss_final", "test_loss_by_domain", "test_bpb")


@pytest.fixture(scope="module")
def artifacts(make_artifacts: Callable[[int], DataArtifacts]) -> DataArtifacts:
    return make_artifacts(U)


@pytest.fixture(scope="module")
def single(artifacts: DataArtifacts, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunRecord, Path]:
    run_dir = tmp_path_factory.mktemp("strategies") / "single"
    return worker.run(resolved_config(run_dir, artifacts)), run_dir


def strategy(name: str) -> Any:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "strategy" / f"{name}.yaml"))


def torchrun(path: Path, nproc: int) -> RunRecord:
    """The launcher's command for one node: ``torchrun --nproc_per_node`` -> the worker."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(torchrun_command(path, nproc), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_record(path.parent / "record.json")


def train_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as fh:
        return [float(r["train/loss"]) for r in csv.DictReader(fh) if r["train/loss"]]


def differences(run: tuple[RunRecord, Path], reference: tuple[RunRecord, Path]) -> dict[str, float]:
    """Largest relative difference to the reference: record losses, per-domain values, the loss curve."""
    (record, run_dir), (ref, ref_dir) = run, reference
    rel = {f: abs(getattr(record, f) / getattr(ref, f) - 1) for f in LOSS_FIELDS}
    for f in DOMAIN_FIELDS:
        ours, theirs = getattr(record, f), getattr(ref, f)
        assert ours.keys() == theirs.keys()
        rel[f] = max(abs(ours[d] / theirs[d] - 1) for d in theirs)
    curve, ref_curve = train_losses(run_dir), train_losses(ref_dir)
    assert len(curve) == len(ref_curve) == ref.steps  # one training-loss row per optimizer step
    rel["train/loss curve"] = max(abs(a / b - 1) for a, b in zip(curve, ref_curve, strict=True))
    return rel


def assert_reproduces(run: tuple[RunRecord, Path], reference: tuple[RunRecord, Path]) -> None:
    record, ref = run[0], reference[0]
    same = ("steps", "best_step", "tokens_seen", "planned_steps", "stop_reason", "subset_hash")
    assert [getattr(record, f) for f in same] == [getattr(ref, f) for f in same]
    rel = differences(run, reference)
    print(f"{record.strategy} x{record.world_size}, accumulation {record.grad_accumulation}: {rel}")
    assert max(rel.values()) <= TOLERANCE, rel


def plain_test_loss(model: GPT, artifacts: DataArtifacts) -> float:
    """Macro-mean test loss of a plain GPT, computed without Lightning."""
    token_bytes = torch.ones(artifacts.vocab_size, dtype=torch.int64).numpy()
    losses = []
    for paths in artifacts.eval_caches.values():
        windows = EvalWindows(TokenCache.open(paths["test"]).tokens, token_bytes, model.cfg.seq_len)
        with torch.no_grad():
            nats = model(windows.inputs, windows.targets).double().sum().item()
        losses.append(nats / int((windows.targets != IGNORE_INDEX).sum()))
    return sum(losses) / len(losses)


def assert_speed_fields(record: RunRecord) -> None:
    assert None not in (record.step_tokens_per_s, record.model_flops_per_token, record.peak_flops_per_s)
    assert record.mfu is not None and record.step_tokens_per_s > 0 and record.model_flops_per_token > 0
    assert record.achieved_flops_per_s == pytest.approx(
        record.step_tokens_per_s * record.model_flops_per_token
    )
    assert record.mfu == pytest.approx(
        mfu(record.step_tokens_per_s, record.model_flops_per_token, record.peak_flops_per_s)
    )
    assert 0 < record.mfu < 1 and "measured fp32 matmul" in record.peak_flops_source
    assert len(record.peak_memory_mib) == record.world_size and min(record.peak_memory_mib) > 10


def test_single_process_record_has_speed_and_a_checkpoint_for_the_plain_model(
    single: tuple[RunRecord, Path], artifacts: DataArtifacts
) -> None:
    record, _ = single
    assert (record.strategy, record.world_size, record.grad_accumulation, record.num_nodes) == (
        "single_device",
        1,
        1,
        1,
    )
    assert record.micro_batch_sequences == 8 and not record.compiled
    assert_speed_fields(record)
    model = load_gpt(Path(record.best_checkpoint))
    assert plain_test_loss(model, artifacts) == pytest.approx(record.test_loss, rel=1e-9)


def test_gradient_accumulation_reproduces_one_process(
    single: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    """A 128-token memory bound: 2 micro-batches of 4 sequences per step instead of 1 of 8."""
    run_dir = tmp_path / "accumulation"
    record = worker.run(resolved_config(run_dir, artifacts, **{"worker.max_micro_batch_tokens": 128}))
    assert (record.grad_accumulation, record.micro_batch_sequences) == (2, 4)
    assert_reproduces((record, run_dir), single)


def test_fsdp_two_ranks_reproduce_one_process_with_sharded_and_consolidated_checkpoints(
    single: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    path = resolved_config(
        tmp_path / "fsdp", artifacts, **{"strategy": strategy("fsdp"), "trainer.devices": 2}
    )
    record = torchrun(path, 2)
    assert (record.strategy, record.world_size, record.micro_batch_sequences) == ("fsdp", 2, 4)
    assert_reproduces((record, path.parent), single)
    assert_speed_fields(record)
    # the best checkpoint is sharded: one file of parameters and optimizer state per rank
    sharded = path.parent / "checkpoints" / f"best-step={record.best_step}.ckpt"
    assert is_sharded(sharded)
    assert {p.name for p in sharded.iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"}
    # consolidated into one file that loads into the plain model and gives the recorded test loss
    consolidated = Path(record.best_checkpoint)
    assert consolidated.is_file() and consolidated.name == f"best-step={record.best_step}.consolidated.ckpt"
    model = load_gpt(consolidated)
    assert plain_test_loss(model, artifacts) == pytest.approx(record.test_loss, rel=1e-6)
    full = load_sharded(sharded)
    assert len(full["optimizer_states"]) == 1 and full["global_step"] == record.best_step
    for name, tensor in model_state(full).items():
        assert torch.equal(tensor, model.state_dict()[name]), name


@pytest.mark.slow
def test_ddp_two_ranks_reproduce_one_process_and_its_checkpoint_loads(
    single: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    path = resolved_config(tmp_path / "ddp", artifacts, **{"strategy": strategy("ddp"), "trainer.devices": 2})
    record = torchrun(path, 2)
    assert (record.strategy, record.world_size, record.micro_batch_sequences) == ("ddp", 2, 4)
    assert_reproduces((record, path.parent), single)
    assert_speed_fields(record)
    model = load_gpt(Path(record.best_checkpoint))
    assert plain_test_loss(model, artifacts) == pytest.approx(record.test_loss, rel=1e-6)


@pytest.mark.slow
def test_fsdp_two_ranks_with_accumulation_reproduce_one_process(
    single: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    """2 ranks x 2 micro-batches of 2 sequences: the same global batch of 8 as one process."""
    path = resolved_config(
        tmp_path / "fsdp_acc",
        artifacts,
        **{"strategy": strategy("fsdp"), "trainer.devices": 2, "worker.max_micro_batch_tokens": 64},
    )
    record = torchrun(path, 2)
    assert (record.grad_accumulation, record.micro_batch_sequences) == (2, 2)
    assert_reproduces((record, path.parent), single)
    assert record.mfu is not None and record.mfu > 0
