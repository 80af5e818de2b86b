"""The worker end to end on tiny real data: record consistency, exact metrics, determinism, failures,
torchrun."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_fixtures import TINY_TRAINING, resolved_config

from datascale.artifacts import DataArtifacts
from datascale.data.token_cache import TokenCache
from datascale.records import RunRecord, read_record
from datascale.training import worker
from datascale.training.datamodule import IGNORE_INDEX, EvalWindows
from datascale.training.module import GPTLightningModule

U = 2048
CONTRACT_METRICS = {
    "train/loss",
    "train/lr",
    "tokens_seen",
    "epochs",
    "val/loss",
    "val/code/loss",
    "val/code/bpb",
    "val/prose/loss",
    "val/prose/bpb",
    "test/loss",
    "test/code/loss",
    "test/prose/bpb",
}


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def artifacts(make_artifacts: Callable[[int], DataArtifacts]) -> DataArtifacts:
    return make_artifacts(U)


@pytest.fixture(scope="module")
def done_run(artifacts: DataArtifacts, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunRecord, Path]:
    run_dir = tmp_path_factory.mktemp("runs") / "run_a"
    record = worker.run(resolved_config(run_dir, artifacts))
    return record, run_dir


def test_record_is_complete_and_consistent(done_run: tuple[RunRecord, Path]) -> None:
    record, run_dir = done_run
    on_disk = read_record(run_dir / "record.json")
    assert on_disk == record and record.status == "done" and record.error is None
    for f in dataclasses.fields(RunRecord):  # job_setup_s: the Hydra job's, and no job started this one
        assert getattr(record, f.name) is not None or f.name in ("error", "job_setup_s"), f.name
    assert record.job_setup_s is None
    batch = TINY_TRAINING["batch_tokens"]
    assert record.unique_tokens == U and record.tokens_seen == record.steps * batch
    assert record.epochs == pytest.approx(record.tokens_seen / U)
    assert record.epochs_at_best == pytest.approx(record.best_step * batch / U)
    assert record.steps <= record.planned_steps == 48  # 6 epochs of 2048 / 256
    assert record.stop_reason in ("early_stopping", "token_cap")
    assert record.converged == (record.stop_reason == "early_stopping")
    assert record.best_val_loss <= record.final_val_loss and math.isfinite(record.test_loss)
    assert record.best_val_loss < math.log(320) - 1.0  # it learned something
    assert set(record.reference_losses) == {"code", "prose"}  # the data stage's floors travel with the run
    assert record.reference_losses["code"]["test"]["uniform_nats"] == pytest.approx(math.log(320))
    assert record.val_loss_best.keys() == record.test_bpb.keys() == {"code", "prose"}
    assert record.best_val_loss == pytest.approx(np.mean(list(record.val_loss_best.values())))
    assert record.test_bpb_mean == pytest.approx(np.mean(list(record.test_bpb.values())))
    assert record.params_total > record.params_non_embedding > 0
    assert record.axes == {"unique_tokens": U, "seed": 0} and record.world_size == 1
    assert record.accelerator == "cpu" and record.precision == "32-true" and record.tokens_per_s > 0
    assert record.code_version and record.subset_hash and record.config["run"]["id"] == "run_a"


def test_record_says_where_the_wall_time_went(done_run: tuple[RunRecord, Path]) -> None:
    """Start-up, training steps, evaluation, checkpoint writes and teardown: measured, and they fit inside the
    wall time; evaluation FLOPs are a forward pass (a third of a training token) over every scored window."""
    record, _ = done_run
    assert record.startup_s is not None and 0 < record.startup_s < record.wall_time_s
    assert record.startup_cpu_s is not None and record.startup_cpu_s > 0
    assert record.step_time_s is not None and 0 < record.step_time_s < record.train_time_s
    assert record.eval_time_s is not None and record.checkpoint_time_s is not None
    assert record.teardown_s is not None and record.teardown_s >= 0
    parts = record.startup_s + record.step_time_s + record.eval_time_s + record.checkpoint_time_s
    assert parts + record.teardown_s <= record.wall_time_s
    assert record.threads and record.cores
    scored = sum(len(c) for c in record.eval_precision["subset"]["windows"].values())
    assert record.eval_tokens is not None and record.eval_tokens > scored * 32
    assert record.eval_flops == pytest.approx(record.eval_tokens * record.model_flops_per_token / 3)
    assert [c["delta_se"] is None for c in record.val_curve] == [True] + [False] * (len(record.val_curve) - 1)
    assert record.eval_precision["target"] == 0.02 and record.eval_precision["delta_se_median"] > 0


def test_metrics_csv_has_the_contract_metrics(done_run: tuple[RunRecord, Path]) -> None:
    record, run_dir = done_run
    rows = metrics_rows(run_dir)
    assert set(rows[0]) >= CONTRACT_METRICS
    evals = [r for r in rows if r["val/loss"]]
    # validation every 8 steps (one epoch of 2048 tokens, 512-token minimum), logged with its tokens_seen
    assert [int(float(r["tokens_seen"])) for r in evals] == list(range(2048, record.tokens_seen + 1, 2048))
    assert min(float(r["val/loss"]) for r in evals) == pytest.approx(record.best_val_loss, rel=1e-6)
    assert float(evals[-1]["val/loss"]) == pytest.approx(record.final_val_loss, rel=1e-6)
    train = [r for r in rows if r["train/loss"]]
    assert len(train) == record.steps and float(train[-1]["epochs"]) == pytest.approx(record.epochs)
    log = (run_dir / "worker.log").read_text()
    assert "start run run_a" in log and "end run run_a" in log
    assert list((run_dir / "checkpoints").glob(f"best-step={record.best_step}.ckpt"))


def _manual_eval(
    module: GPTLightningModule, artifacts: DataArtifacts, split: str, windows: dict[str, list[int]] | None
) -> dict[str, tuple[float, int, int]]:
    """(nats, target tokens, target bytes) per domain over the given windows (None: all), without
    Lightning."""
    token_bytes = np.load(artifacts.token_bytes_path)
    out = {}
    for domain, paths in artifacts.eval_caches.items():
        cap = TINY_TRAINING["eval_tokens_per_domain"] if split == "val" else None
        ds = EvalWindows(TokenCache.open(paths[split]).tokens, token_bytes, 32, cap)
        kept = slice(None) if windows is None else windows[domain]
        inputs, targets, nbytes = ds.inputs[kept], ds.targets[kept], ds.target_bytes[kept]
        with torch.no_grad():
            nats = module.model(inputs, targets).double().sum().item()
        out[domain] = (nats, int((targets != IGNORE_INDEX).sum()), int(nbytes.sum()))
    return out


def test_test_loss_is_the_best_checkpoint_and_bpb_is_exact(
    done_run: tuple[RunRecord, Path], artifacts: DataArtifacts
) -> None:
    record, run_dir = done_run
    ckpt = torch.load(run_dir / "checkpoints" / f"best-step={record.best_step}.ckpt", weights_only=False)
    module = GPTLightningModule.__new__(GPTLightningModule)
    from datascale.model import GPT, GPTConfig

    torch.nn.Module.__init__(module)
    module.model = GPT(GPTConfig(**ckpt["hyper_parameters"]["model"]))
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    for domain, (nats, tokens, nbytes) in _manual_eval(module, artifacts, "test", None).items():
        whole = TokenCache.open(artifacts.eval_caches[domain]["test"]).n_tokens - 1
        assert tokens == whole  # the whole test set, each target once
        assert record.test_loss_by_domain[domain] == pytest.approx(nats / tokens, rel=1e-5)
        assert record.test_bpb[domain] == pytest.approx(nats / (nbytes * math.log(2)), rel=1e-5)
    # validation after the precision target's choice: the kept windows' loss plus the offset measured at the
    # choice (the full set's loss minus theirs), exactly
    subset = record.eval_precision["subset"]
    assert record.best_step > subset["chosen_at_step"] and 0 < subset["fraction"] < 1
    kept = subset["windows"]
    for domain, (nats, tokens, nbytes) in _manual_eval(module, artifacts, "val", kept).items():
        assert tokens < TINY_TRAINING["eval_tokens_per_domain"]  # the cap, less the windows left out
        assert tokens == record.eval_precision["val_tokens_by_domain"][domain]
        offset, bpb_offset = subset["loss_offset"][domain], subset["bpb_offset"][domain]
        assert record.val_loss_best[domain] == pytest.approx(nats / tokens + offset, rel=1e-5)
        bpb = nats / (nbytes * math.log(2)) + bpb_offset
        assert record.val_bpb_best[domain] == pytest.approx(bpb, rel=1e-5)


def test_same_seed_gives_identical_results(
    done_run: tuple[RunRecord, Path], artifacts: DataArtifacts, tmp_path: Path
) -> None:
    record, run_dir = done_run
    again = worker.run(resolved_config(tmp_path / "run_b", artifacts))
    assert again.best_val_loss == record.best_val_loss and again.test_loss == record.test_loss
    assert [r["train/loss"] for r in metrics_rows(tmp_path / "run_b")] == [
        r["train/loss"] for r in metrics_rows(run_dir)
    ]


def test_early_stopping_fires_on_a_tiny_subset(
    make_artifacts: Callable[[int], DataArtifacts], tmp_path: Path
) -> None:
    """512 tokens, 200-epoch cap, high LR: the model overfits and patience (2 evals) ends the run early."""
    small = make_artifacts(512)
    record = worker.run(
        resolved_config(tmp_path / "run_es", small, **{"training.cap_epochs": 200.0, "optim.lr": 0.03})
    )
    interval = 2  # steps: the 512-token minimum eval interval
    assert record.stop_reason == "early_stopping" and record.converged
    assert record.steps < record.planned_steps == 400
    assert record.steps == record.best_step + TINY_TRAINING["patience"] * interval
    assert record.final_val_loss > record.best_val_loss


def test_failure_writes_a_failed_record_and_finishes_wandb_with_exit_code_1(
    artifacts: DataArtifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished: list[dict[str, Any]] = []
    monkeypatch.setattr(
        worker, "finish_wandb", lambda logger, code, **kw: finished.append({"code": code, **kw})
    )

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("simulated crash in fit")

    monkeypatch.setattr(worker.pl.Trainer, "fit", boom)
    path = resolved_config(tmp_path / "run_fail", artifacts)
    assert worker.main([str(path)]) == 1
    record = read_record(tmp_path / "run_fail" / "record.json")
    assert record.status == "failed" and record.error == "RuntimeError: simulated crash in fit"
    assert record.params_total > 0 and record.subset_hash == artifacts.subset_hash  # what was known is kept
    assert finished == [
        {"code": 1, "record": None, "record_path": None, "artifacts": artifacts, "log_artifacts": False}
    ]


def test_config_error_exits_2_with_the_field(
    artifacts: DataArtifacts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = resolved_config(tmp_path / "run_bad", artifacts, **{"training.batch_tokens": 250})
    assert worker.main([str(path)]) == 2
    assert "training.batch_tokens=250: must be a multiple of model.seq_len=32" in capsys.readouterr().err
    assert read_record(tmp_path / "run_bad" / "record.json").status == "failed"


def test_worker_under_torchrun(artifacts: DataArtifacts, tmp_path: Path) -> None:
    """The launcher's exact command: torchrun (1 process) -> python -m datascale.training.worker
    resolved.yaml."""
    path = resolved_config(tmp_path / "run_tr", artifacts, **{"training.cap_epochs": 2.0})
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "datascale.training.worker",
            str(path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = read_record(tmp_path / "run_tr" / "record.json")
    assert record.status == "done" and record.steps == 16 and record.world_size == 1
    assert "end run run_tr" in (tmp_path / "run_tr" / "worker.log").read_text()


def test_record_names_only_the_restricted_training_domains(corpus_files: Path, tmp_path: Path) -> None:
    """``split.train_domains`` restricts the pool: the record must say so, and still evaluate every domain."""
    from datascale.data.prepare import prepare_data
    from datascale.data.sources import LocalFiles
    from datascale.data.splits import HeldoutSplit
    from datascale.data.subsets import SizeSubset
    from datascale.data.tokenizer import BPETokenizer

    artifacts = prepare_data(
        LocalFiles(paths=[str(corpus_files)], domain_field="domain"),
        HeldoutSplit(seed=0, eval_bytes_per_domain=3000, train_domains=["prose"]),
        BPETokenizer(vocab_size=320),
        SizeSubset(unique_tokens=1024),
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert artifacts.train_domains == ["prose"]
    record = worker.run(resolved_config(tmp_path / "run", artifacts, **{"training.cap_epochs": 2.0}))
    assert record.train_domains == ["prose"]
    assert record.eval_domains == ["code", "prose"] and set(record.test_loss_by_domain) == {"code", "prose"}
    # selected on its own domain's held-out loss (training.select_on=train_domains), not on the macro mean
    assert record.selection_domains == ["prose"]
    best = min(record.val_curve, key=lambda p: p["selection_loss"])
    assert best["step"] == record.best_step
    assert record.val_loss_best["prose"] == pytest.approx(best["selection_loss"], rel=1e-9)
    assert best["loss"] == pytest.approx(record.best_val_loss) != best["selection_loss"]


def test_record_has_the_learning_curve_of_every_evaluation(done_run: tuple[RunRecord, Path]) -> None:
    record, run_dir = done_run
    curve = record.val_curve
    val_rows = [r for r in metrics_rows(run_dir) if r.get("val/loss")]
    assert len(curve) == len(val_rows) >= 2
    assert [p["tokens_seen"] for p in curve] == [p["step"] * TINY_TRAINING["batch_tokens"] for p in curve]
    assert (
        curve[-1]["loss"] == record.final_val_loss and min(p["loss"] for p in curve) == record.best_val_loss
    )
    assert curve[-1]["lr"] < curve[0]["lr"]  # cosine: the LR has decayed by the end
    assert record.selection_domains == record.eval_domains, "trained on every domain: selected on all"
    assert all(p["selection_loss"] == pytest.approx(p["loss"], rel=1e-12) for p in curve)
