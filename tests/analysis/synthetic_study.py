"""A synthetic study for the analysis tests: realistic run records whose test loss follows a known law.

Why in the tests, not the package: nothing in production writes fake studies; the tests (and only they)
need studies with a known answer. The records go through ``datascale.records.write_record`` exactly like a
real study's, so everything downstream reads them the same way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datascale.records import RunRecord, write_record


def synthetic_record(
    study: str,
    u: int,
    seed: int,
    losses: tuple[float, float],
    converged: bool,
    domains: Sequence[str],
    domain_offsets: np.ndarray,
    synthetic: dict[str, float],
    params_total: int,
) -> RunRecord:
    """One realistic record of a synthetic run (test loss ``losses[0]``, best val loss ``losses[1]``)."""
    test, val_best = losses
    epochs = float(np.clip(4e7 / u, 2.0, 100.0)) if converged else 100.0
    batch = 8192
    steps = round(epochs * u / batch)
    tokens_seen = steps * batch
    best_step = int(steps * (0.8 if converged else 1.0))
    per_dom = {d: test + off for d, off in zip(domains, domain_offsets, strict=True)}
    run_id = hashlib.sha256(f"{study}/{u}/{seed}".encode()).hexdigest()[:12]
    return RunRecord(
        run_id=run_id,
        study=study,
        status="done",
        axes={"unique_tokens": int(u), "seed": int(seed)},
        seed=int(seed),
        created_at="2026-11-22T00:00:00+00:00",
        code_version="synthetic",
        config={"synthetic": dict(synthetic)},
        corpus_hash="synthetic-corpus",
        tokenizer_hash="synthetic-tokenizer",
        subset_hash=f"subset-{u}",
        train_domains=list(domains),
        eval_domains=list(domains),
        params_total=params_total,
        params_non_embedding=int(params_total * 0.7),
        unique_tokens=int(u),
        tokens_seen=tokens_seen,
        epochs=tokens_seen / u,
        steps=steps,
        planned_steps=steps if not converged else int(steps * 1.5),
        best_step=best_step,
        tokens_at_best=best_step * batch,
        epochs_at_best=best_step * batch / u,
        converged=converged,
        stop_reason="early_stopping" if converged else "token_cap",
        best_val_loss=val_best,
        final_val_loss=val_best * 1.01,
        test_loss=test,
        val_loss_best={d: v * val_best / test for d, v in per_dom.items()},
        val_loss_final={d: v * 1.01 for d, v in per_dom.items()},
        test_loss_by_domain=per_dom,
        val_bpb_best={d: v / math.log(2) / 3.5 for d, v in per_dom.items()},
        test_bpb={d: v / math.log(2) / 3.5 for d, v in per_dom.items()},
        test_bpb_mean=test / math.log(2) / 3.5,
        wall_time_s=tokens_seen / 8000.0,
        train_time_s=tokens_seen / 8500.0,
        tokens_per_s=8500.0,
        world_size=1,
        strategy="single",
        accelerator="cpu",
        precision="32-true",
    )


def write_synthetic_study(
    study_dir: Path | str,
    *,
    sizes: Sequence[int] = (250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000),
    seeds: Sequence[int] = (0, 1),
    E: float = 2.0,
    B: float = 400.0,
    beta: float = 0.4,
    noise: float = 0.01,
    rng_seed: int = 0,
    domains: Sequence[str] = ("literature", "code"),
    study: str = "synthetic",
    non_converged_sizes: Sequence[int] = (),
    params_total: int = 905_000,
) -> list[Path]:
    """Write realistic RunRecord JSONs whose test loss follows ``E + B * U**-beta`` times log-normal noise.

    Runs at ``non_converged_sizes`` hit the token cap (``converged=False``).
    """
    rng = np.random.default_rng(rng_seed)
    root = Path(study_dir)
    paths = []
    domain_offsets = np.linspace(-0.3, 0.3, num=max(len(domains), 1))
    synthetic = {"E": E, "B": B, "beta": beta, "noise": noise}
    for u in sizes:
        for seed in seeds:
            clean = E + B * float(u) ** -beta
            test = clean * float(np.exp(rng.normal(0.0, noise)))
            val_best = test * float(np.exp(rng.normal(0.0, noise / 3)))
            converged = u not in non_converged_sizes
            rec = synthetic_record(
                study, u, seed, (test, val_best), converged, domains, domain_offsets, synthetic, params_total
            )
            paths.append(write_record(root / "runs" / rec.run_id, rec))
    return paths
