"""The run record: one JSON file per run, the source of truth for every analysis (W&B is only a view).

A record is written once, atomically (temp file + ``os.replace``), when a run finishes. A record whose
``status`` is ``done`` is never overwritten. This module is torch-free so that the analysis package can read
records without importing the training stack.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from datascale.storage import atomic_write_json

log = logging.getLogger("datascale.records")

SCHEMA_VERSION = 1
RECORD_FILENAME = "record.json"
#: pre-registered predictions (datascale.orchestration.preregister writes, scaling_analysis --preregister
#: computes): the current one in the study dir, every one write-once below PREDICTIONS_DIR, and in a target
#: run's dir the prediction it was started under (written once, before training)
PREDICTION_FILENAME = "prediction.json"
PREDICTIONS_DIR = "predictions"
PREREGISTRATION_FILENAME = "preregistration.json"
STATUSES = ("done", "failed")


def _doc(text: str, default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    """A dataclass field whose documentation travels with it (README table, analysis docs)."""
    kwargs: dict[str, Any] = {"metadata": {"doc": text}}
    if default is not MISSING:
        kwargs["default"] = default
    if default_factory is not MISSING:
        kwargs["default_factory"] = default_factory
    return field(**kwargs)


@dataclass
class RunRecord:
    """Everything one finished run measured, and everything needed to reproduce it."""

    # identity
    run_id: str = _doc("hash of the resolved config and the subset manifest; also the W&B run id")
    study: str = _doc("study name (`study.name`); the W&B group")
    status: str = _doc("`done` (trained and tested) or `failed`")
    axes: dict[str, Any] = _doc(
        "the swept values of this run, e.g. {'unique_tokens': 16000, 'seed': 1}; W&B tags"
    )
    seed: int = _doc("training seed (initialisation and batch order)")
    # provenance
    created_at: str = _doc("UTC ISO-8601 time the record was written")
    code_version: str = _doc(
        "git commit of the code (`+dirty` if uncommitted changes), or the package version"
    )
    config: dict[str, Any] = _doc("the resolved Hydra config the worker ran")
    corpus_hash: str = _doc("content hash of the deduplicated corpus")
    tokenizer_hash: str = _doc("hash of tokenizer.json")
    subset_hash: str = _doc("hash of the subset manifest (doc ids, order seed, token stream)")
    train_domains: list[str] = _doc("domains in the training pool")
    eval_domains: list[str] = _doc("domains with held-out validation/test sets")
    # model
    params_total: int = _doc("parameters, embeddings included (tied weights counted once)")
    params_non_embedding: int = _doc("parameters without token/position embeddings")
    # data exposure
    unique_tokens: int = _doc("U: tokens in the training subset")
    tokens_seen: int = _doc(
        "D: training tokens processed (steps x global batch tokens), the cooldown's included"
    )
    epochs: float = _doc("D / U")
    steps: int = _doc("optimizer steps taken (the stable phase's and the cooldown's)")
    planned_steps: int = _doc(
        "steps of the token cap: the stable phase's limit; the planned schedules (`warmup_cosine`, `wsd`) "
        "span them"
    )
    best_step: int = _doc(
        "step of the checkpoint with the best validation loss: the length early stopping chose (a cooldown "
        "ends there, or starts there with `schedule.anchor=start_at_best`)"
    )
    tokens_at_best: int = _doc(
        "tokens the reported (tested) model was trained on: the best checkpoint's, plus its cooldown's"
    )
    epochs_at_best: float = _doc("tokens_at_best / U")
    converged: bool = _doc("True if early stopping fired; False if the token cap was hit first")
    stop_reason: str = _doc("`early_stopping` or `token_cap`; a failed run: `non_finite_loss` (or empty)")
    # losses (nats per token unless said otherwise)
    best_val_loss: float = _doc(
        "macro-mean validation loss over every eval domain of the reported model: the best checkpoint (its "
        "minimum when the run trained on every eval domain, or with `training.select_on=all_domains`), "
        "annealed under `schedule=wsd_cooldown`"
    )
    final_val_loss: float = _doc("macro-mean validation loss at the last evaluation (after any cooldown)")
    test_loss: float = _doc(
        "macro-mean test loss of the reported model: the best checkpoint, annealed under "
        "`schedule=wsd_cooldown` (what fits use by default)"
    )
    val_loss_best: dict[str, float] = _doc("per-domain validation loss of the reported model")
    val_loss_final: dict[str, float] = _doc("per-domain validation loss at the last evaluation")
    test_loss_by_domain: dict[str, float] = _doc("per-domain test loss of the best checkpoint")
    val_bpb_best: dict[str, float] = _doc("per-domain validation bits per byte at the best checkpoint")
    test_bpb: dict[str, float] = _doc("per-domain test bits per byte of the best checkpoint")
    test_bpb_mean: float = _doc("macro-mean test bits per byte")
    # cost
    wall_time_s: float = _doc(
        "seconds from the worker command's start (the launcher's spawn: interpreter and imports included; by "
        "hand: the worker process's start) to the record"
    )
    train_time_s: float = _doc(
        "seconds inside Trainer.fit (training steps, evaluations and checkpoint writes)"
    )
    tokens_per_s: float = _doc("training tokens per second during fit (global)")
    # execution
    world_size: int = _doc("processes (ranks)")
    strategy: str = _doc("Lightning strategy name")
    accelerator: str = _doc("cpu / cuda")
    precision: str = _doc("Lightning precision setting")
    # layout and performance (datascale.training.throughput); defaults keep older records loadable;
    # None: not measured
    num_nodes: int = _doc("nodes (ranks per node = world_size / num_nodes)", default=1)
    micro_batch_sequences: int = _doc(
        "sequences per rank per forward pass (global batch / world size / grad_accumulation)", default=0
    )
    grad_accumulation: int = _doc("micro-batches per optimizer step on each rank", default=1)
    compiled: bool = _doc("Transformer blocks run under torch.compile", default=False)
    device_name: str = _doc("GPU model (torch.cuda.get_device_name) or CPU model", default="")
    step_tokens_per_s: float | None = _doc(
        "training tokens per second inside training steps only (evaluation excluded; global); MFU uses it",
        default=None,
    )
    model_flops_per_token: float | None = _doc(
        "training FLOPs per token: 6 x matmul weights (LM head included) + 12 x layers x seq_len x d_model",
        default=None,
    )
    achieved_flops_per_s: float | None = _doc("step_tokens_per_s x model_flops_per_token", default=None)
    peak_flops_per_s: float | None = _doc(
        "peak FLOP/s of all devices used (per-device peak x world size)", default=None
    )
    peak_flops_source: str = _doc(
        "where the peak comes from: GPU datasheet table, `estimated` (unknown GPU, measured matmul) or the "
        "measured CPU matmul peak",
        default="",
    )
    mfu: float | None = _doc("model FLOPs utilisation: achieved_flops_per_s / peak_flops_per_s", default=None)
    # where the wall time went (datascale.training.clock, PhaseClock); None: not measured (older records)
    threads: int | None = _doc(
        "torch threads per rank at the start (peak_flops_per_s is for these)", default=None
    )
    threads_mean: float | None = _doc(
        "torch threads per rank over the training loop, time-weighted (`worker.adaptive_threads` may change "
        "them)",
        default=None,
    )
    thread_changes: list[list[int]] = _doc(
        "[step, threads] of each change made by `worker.adaptive_threads` (empty: none)", default_factory=list
    )
    cores: int | None = _doc("CPU cores the worker could run on (its affinity mask)", default=None)
    job_setup_s: float | None = _doc(
        "seconds the Hydra job spent on this attempt before starting the worker (validation, cached data "
        "loaded and verified, run id, lease); None when the worker was started by hand",
        default=None,
    )
    startup_s: float | None = _doc(
        "seconds from the worker command's start to the first training step (interpreter, imports, data, "
        "model, Trainer, loggers); a resumed run: its last attempt's",
        default=None,
    )
    worker_start: str | None = _doc(
        "how the worker process started: `fork` (from the Hydra job's preloaded forkserver: torch, Lightning "
        "and W&B imported once per job process, `worker.preload`; `fork (not preloaded)` if its imports "
        "failed there), `exec` (a fresh interpreter: torchrun, a task per rank, GPUs, or by hand); None in "
        "older records",
        default=None,
    )
    startup_cpu_s: float | None = _doc(
        "CPU seconds the worker process (all its threads) used before the first training step: start-up as "
        "work, whatever else shares the machine (W&B's service process not included)",
        default=None,
    )
    step_time_s: float | None = _doc(
        "seconds inside training steps (forward, backward, optimizer: the clock of step_tokens_per_s)",
        default=None,
    )
    eval_time_s: float | None = _doc(
        "seconds in evaluation loops: every validation and the test (a resumed run sums its attempts)",
        default=None,
    )
    checkpoint_time_s: float | None = _doc(
        "seconds writing checkpoints: the best one and resume ones, checksums included", default=None
    )
    teardown_s: float | None = _doc(
        "seconds from the end of the last training step to the record, less the evaluations and checkpoint "
        "writes in between (Trainer teardown, best-checkpoint load, downstream tasks, metrics merge); W&B's "
        "finish and the process exit come after the record (`status.json`: `exit_after_record_s`)",
        default=None,
    )
    eval_tokens: int | None = _doc(
        "held-out positions fed forward: every window of every validation and of the test", default=None
    )
    eval_flops: float | None = _doc(
        "forward FLOPs of evaluation: eval_tokens x model_flops_per_token / 3", default=None
    )
    eval_precision: dict[str, Any] = _doc(
        "what evaluation measured to what precision (`datascale.training.precision`): `target` "
        "(`training.eval_se_target`, nats), `subset` (the choice at the third validation: `chosen_at_step`, "
        "`pair_se` = paired SE of the selection loss's change from the second to the third, on every window, "
        "`fraction` of each domain's windows kept, `windows`, difference-estimator offsets), "
        "`val_tokens_by_domain` (scored per validation after the choice), `delta_se_median` (the paired SE "
        "of each validation's change, median over the run), `best_loss_se` and `test_loss_se` (clustered SE "
        "of the macro loss at the best validation and of the test)",
        default_factory=dict,
    )
    peak_memory_mib: list[float] = _doc(
        "peak memory per rank in MiB (CUDA: max allocated; CPU: max resident set size)", default_factory=list
    )
    best_checkpoint: str = _doc(
        "single-file checkpoint of the best step that loads into the plain model (FSDP: consolidated)",
        default="",
    )
    wandb: dict[str, Any] = _doc("W&B run id, project, group, mode and local dir", default_factory=dict)
    subset_domains: dict[str, dict[str, Any]] = _doc(
        "per domain of the subset: `unique_tokens`, `share` of U, `pool_tokens`, `repeats` (> 1 when "
        "`subset.allow_repeat` let a domain repeat); one entry `*` for an unstratified subset",
        default_factory=dict,
    )
    pool_transforms: list[dict[str, Any]] = _doc(
        "pool transforms applied before subsetting (group, name, params, documents in/out, removed per "
        "reason); empty for the untransformed pool",
        default_factory=list,
    )
    # objective and downstream transfer (datascale.training.objective, .downstream_eval); defaults keep
    # older records loadable
    objective: str = _doc(
        "pretraining objective: `clm` (causal next token) or `mlm` (masked tokens)", default="clm"
    )
    loss_unit: str = _doc(
        "what the losses are: nats per next token (clm; bpb defined), or nats per masked token under the "
        "fixed held-out masking (mlm; its bpb is those nats over the masked tokens' bytes)",
        default="nats per next token",
    )
    downstream: dict[str, dict[str, Any]] = _doc(
        "per downstream task and mode (`<task>@<mode>`, mode probe | finetune | zeroshot | pseudo): "
        "`task`, `mode`, `accuracy`, `macro_f1`, `loss` (test cross-entropy), `chance`, `majority`, "
        "`n_test`, `steps`; empty without `downstream=suite`",
        default_factory=dict,
    )
    val_curve: list[dict[str, Any]] = _doc(
        "the learning curve: every evaluation's `step`, `tokens_seen`, `lr`, macro validation `loss` and "
        "`selection_loss` (over `selection_domains`), `loss_se` (clustered SE of that loss) and `delta_se` "
        "(paired SE of the selection loss's change since the evaluation before); "
        "under `schedule=warmup_cosine` intermediate points are not losses of runs trained to those tokens "
        "(the LR has not decayed), so fit them only under `wsd` or `wsd_cooldown` (stable-phase points; "
        "the last point of a `wsd_cooldown` run is the annealed one), and they all share one run",
        default_factory=list,
    )
    resumed_at_steps: list[int] = _doc(
        "optimizer steps at which this run was resumed from a checkpoint after a kill or preemption, oldest "
        "first (empty: trained in one go); the data order and tokens_seen continue exactly",
        default_factory=list,
    )
    selection_domains: list[str] = _doc(
        "eval domains whose macro-mean validation loss picked the best checkpoint and stopped the run early "
        "(`training.select_on`: every eval domain, or those with tokens in the subset)",
        default_factory=list,
    )
    launch: dict[str, Any] = _doc(
        "how the Hydra job was started: {study_file (sweeps/<study_file>.yaml; null: conf/config.yaml), "
        "overrides (the job's overrides, sweep values included)}; `datascale --config-dir "
        "sweeps --config-name <study_file> <overrides>` runs it again",
        default_factory=dict,
    )
    reference_losses: dict[str, dict[str, dict[str, float]]] = _doc(
        "per eval domain and split (`val`, `test`): `uniform_nats` (ln V, the loss of a uniform prediction "
        "over the vocabulary: where a curve starts), `unigram_nats` (entropy of the held-out set's own token "
        "frequencies), both also in bits per byte (`uniform_bpb`, `unigram_bpb`), over the evaluated targets "
        "(`n_tokens`, their `n_bytes`); from the data stage, empty in older records",
        default_factory=dict,
    )
    preregistration: dict[str, Any] = _doc(
        "a target run of a pre-registered prediction (`analysis.predict.targets`): `prediction_file` (below "
        "the study dir), `prediction_sha256` (of that file), `prediction_created_at` and `started_at` (UTC: "
        "the prediction was written before this run began training), `targets`; empty for other runs",
        default_factory=dict,
    )
    cooldown: dict[str, Any] = _doc(
        "`schedule=wsd_cooldown`: the anneal at the length early stopping chose: `anchor` (`end_at_best`: "
        "from the stable checkpoint at or before best_step - cooldown_fraction x best_step, ending at "
        "best_step; `start_at_best`: from best_step), `from_step`, `steps`, `shape`, `time_s`, "
        "`val_selection_loss_before` (the best checkpoint's) and `val_selection_loss_after` (the annealed "
        "model's); empty under a planned schedule",
        default_factory=dict,
    )
    schedule_position: float | None = _doc(
        "how much of the LR decay the reported model had had: 0 = still at the peak LR, 1 = fully decayed "
        "(always 1 after a cooldown; under `warmup_cosine` wherever early stopping found the best step)",
        default=None,
    )
    lr_ratio_at_test: float | None = _doc(
        "the LR multiplier (1 = peak) of the reported model's last update", default=None
    )
    error: str | None = _doc("one-line reason when status is `failed`", default=None)
    schema_version: int = _doc("record schema version", default=SCHEMA_VERSION)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r}: must be one of {list(STATUSES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def field_docs() -> dict[str, str]:
    """Column documentation for every record field, in declaration order."""
    return {f.name: f.metadata.get("doc", "") for f in fields(RunRecord)}


class RecordExistsError(FileExistsError):
    """Raised instead of overwriting a finished run's record."""


class CorruptRecordError(ValueError):
    """A record file that cannot be read back (truncated, not JSON, wrong fields); names its path."""


def write_record(run_dir: Path, record: RunRecord) -> Path:
    """Write ``run_dir/record.json`` atomically; never replace a ``done`` record, never drop an earlier one.

    An earlier ``failed`` record is kept as ``record.attempt-<k>.json`` (every attempt's reason survives a
    retry); an unreadable one is kept as ``record.corrupt-<k>.json``.
    """
    path = Path(run_dir) / RECORD_FILENAME
    if path.exists():
        try:
            existing = read_record(path)
        except CorruptRecordError:
            path.rename(_free_name(path, "corrupt"))
        else:
            if existing.status == "done":
                raise RecordExistsError(f"{path}: a finished run's record is never overwritten")
            path.rename(_free_name(path, "attempt"))
    atomic_write_json(path, record.to_dict())
    return path


def _free_name(path: Path, kind: str) -> Path:
    k = 1
    while (candidate := path.with_name(f"{path.stem}.{kind}-{k}{path.suffix}")).exists():
        k += 1
    return candidate


def previous_attempts(run_dir: Path) -> list[RunRecord]:
    """The failed attempts kept beside a run's current record, oldest first."""
    paths = sorted(Path(run_dir).glob("record.attempt-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [read_record(p) for p in paths]


def read_record(path: Path) -> RunRecord:
    """The record at ``path``; :class:`CorruptRecordError` (naming the path) if it cannot be read back."""
    try:
        with open(path) as fh:
            return RunRecord.from_dict(json.load(fh))
    except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise CorruptRecordError(f"{path}: unreadable record ({type(err).__name__}: {err})") from None


def is_done(run_dir: Path) -> bool:
    """True if the run has a readable ``done`` record (an unreadable one is not done: it is retrained)."""
    path = Path(run_dir) / RECORD_FILENAME
    try:
        return path.exists() and read_record(path).status == "done"
    except CorruptRecordError:
        log.warning("%s is unreadable: the run counts as not done", path)
        return False


def scan_record_files(root: Path) -> tuple[list[tuple[Path, RunRecord]], list[tuple[Path, str]]]:
    """``scan_records`` with each readable record's file: ([(path, record)], [(path, why unreadable)])."""
    found, corrupt = [], []
    for p in sorted(Path(root).rglob(RECORD_FILENAME)):
        try:
            found.append((p, read_record(p)))
        except CorruptRecordError as err:
            corrupt.append((p, str(err)))
    return sorted(found, key=lambda pr: (pr[1].study, pr[1].run_id)), corrupt


def scan_records(root: Path) -> tuple[list[RunRecord], list[tuple[Path, str]]]:
    """(every readable record below ``root`` sorted by study and run id, the unreadable ones with why)."""
    found, corrupt = scan_record_files(root)
    return [r for _, r in found], corrupt


def find_records(root: Path, status: str | None = "done") -> list[RunRecord]:
    """Every readable record below ``root`` (a study dir or a results dir), sorted by run id.

    Unreadable records are left out with a warning naming each (``scan_records`` returns them).
    """
    records, corrupt = scan_records(root)
    for path, why in corrupt:
        log.warning("excluded %s: %s", path, why)
    return [r for r in records if status is None or r.status == status]


def prediction_inputs(records: Iterable[RunRecord], loss_metric: str = "test_loss") -> list[list[Any]]:
    """The rows a pre-registered prediction is fitted on: ``[run_id, unique_tokens, loss]`` of every finished
    record given, sorted by run id (the caller leaves the target sizes out)."""
    done = [r for r in records if r.status == "done"]
    rows = [[r.run_id, int(r.unique_tokens), float(getattr(r, loss_metric))] for r in done]
    return sorted(rows, key=lambda row: str(row[0]))


def prediction_inputs_sha256(records: Iterable[RunRecord], loss_metric: str = "test_loss") -> str:
    """sha256 of the fitted inputs (:func:`prediction_inputs` and the loss metric) as canonical JSON: the
    launcher and the analysis compute it alike, so a prediction is known to match the finished runs."""
    payload = {"loss_metric": loss_metric, "rows": prediction_inputs(records, loss_metric)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()
