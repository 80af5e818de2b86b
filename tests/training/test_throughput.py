"""MFU arithmetic on hand-checked cases: FLOPs per token, the GPU peak table, the measured CPU peak."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from datascale.model import GPT, GPTConfig
from datascale.training.throughput import (
    cached_cpu_peak,
    compute_dtype,
    cpu_peak_entry,
    matmul_parameters,
    mfu,
    peak_source,
    table_peak,
    training_flops_per_token,
)


def test_flops_per_token_of_the_default_model_by_hand() -> None:
    # gpt_0p9m at vocab 4096: 2 layers, d=128, T=128
    # matmul weights 2 x 12 x 128^2 + 128 x 4096 = 393,216 + 524,288 = 917,504
    # 6 x 917,504 = 5,505,024; attention 12 x 2 x 128 x 128 = 393,216
    assert matmul_parameters(2, 128, 4096) == 917_504
    assert training_flops_per_token(2, 128, 4096, 128) == 5_898_240


def test_flops_per_token_of_gpt2_small_by_hand() -> None:
    # 12 x 12 x 768^2 = 84,934,656; 768 x 50,257 = 38,597,376 -> 123,532,032 matmul weights
    # 6 x that = 741,192,192; attention 12 x 12 x 1024 x 768 = 113,246,208
    assert training_flops_per_token(12, 768, 50257, 1024) == 854_438_400


def test_matmul_parameters_are_the_models_linear_weights() -> None:
    """The count is the model's: every nn.Linear weight (tied LM head included), no embedding look-ups."""
    cfg = GPTConfig(vocab_size=320, seq_len=32, n_layer=3, d_model=64, n_head=4)
    model = GPT(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul_parameters(cfg.n_layer, cfg.d_model, cfg.vocab_size) == linear


def test_mfu_is_achieved_over_peak() -> None:
    # 1,000 tokens/s x 1e9 FLOPs/token = 1e12 FLOP/s on a 1e13 FLOP/s device
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    assert math.isnan(mfu(1000.0, 1e9, math.nan)) and math.isnan(mfu(math.nan, 1e9, 1e13))


@pytest.mark.parametrize(
    ("device", "dtype", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),
        ("NVIDIA H100 PCIe", "bf16", 756.5e12),
        ("NVIDIA H200", "bf16", 989.4e12),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156e12),
        ("NVIDIA L40S", "bf16", 362.05e12),
        ("NVIDIA L4", "bf16", 121e12),
        ("NVIDIA A10", "fp32", 31.2e12),
        ("Tesla V100-SXM2-16GB", "bf16", None),  # no bf16 tensor cores
        ("NVIDIA GeForce GTX 1080", "fp32", None),  # unknown: the worker measures and marks it estimated
    ],
)
def test_gpu_peak_table(device: str, dtype: str, peak: float | None) -> None:
    assert table_peak(device, dtype) == peak


@pytest.mark.parametrize(
    ("precision", "accelerator", "matmul", "dtype"),
    [
        ("bf16-mixed", "cuda", "high", "bf16"),
        ("16-mixed", "cuda", "high", "fp16"),
        ("32-true", "cuda", "high", "tf32"),
        ("32-true", "cuda", "highest", "fp32"),
        ("32-true", "cpu", "high", "fp32"),
    ],
)
def test_compute_dtype(precision: str, accelerator: str, matmul: str, dtype: str) -> None:
    assert compute_dtype(precision, accelerator, matmul) == dtype


def test_cpu_peak_is_measured_once_and_then_read_from_the_cache(tmp_path: Path) -> None:
    measured = cached_cpu_peak(tmp_path, threads=1)
    assert 1e8 < measured < 1e13  # a real fp32 matmul rate of one core
    cache_file = tmp_path / "matmul_peak.json"
    (key,) = json.loads(cache_file.read_text())
    assert "1 threads" in key
    cache_file.write_text(json.dumps({key: 123.0}))  # a cached value is used, not re-measured
    assert cached_cpu_peak(tmp_path, threads=1) == 123.0


def test_a_cached_peak_below_the_steps_rate_is_measured_again_and_the_higher_one_kept(tmp_path: Path) -> None:
    """A peak measured beside other work is low; a run whose steps beat it (MFU > 1) measures it again. The
    cache keeps the higher value (contention only lowers a measured peak) with the load it was measured
    under."""
    entry = cpu_peak_entry(tmp_path, threads=1)
    assert set(entry) == {"flops", "others_cores", "load_1min", "measured_at"}
    assert entry["others_cores"] is None or entry["others_cores"] >= 0.0
    cache_file = tmp_path / "matmul_peak.json"
    (key,) = json.loads(cache_file.read_text())
    cache_file.write_text(json.dumps({key: 123.0}))  # an old entry: a bare number, load unknown
    assert cached_cpu_peak(tmp_path, threads=1, at_least=100.0) == 123.0  # not beaten: kept
    again = cached_cpu_peak(tmp_path, threads=1, at_least=124.0)  # beaten: measured again
    assert again > 1e8 and json.loads(cache_file.read_text())[key]["flops"] == again
    cache_file.write_text(json.dumps({key: {"flops": 1e15, "others_cores": 0.0}}))
    assert cached_cpu_peak(tmp_path, threads=1, remeasure=True) == 1e15  # a lower measurement never wins


def test_the_peak_source_says_the_load_and_flags_a_peak_the_steps_beat() -> None:
    entry = {"flops": 90e9, "others_cores": 0.8}
    assert "0.80 other cores busy" in peak_source(1, entry, observed=50e9)
    assert "BELOW" not in peak_source(1, entry, observed=50e9)
    assert "BELOW the rate the training steps reached" in peak_source(1, entry, observed=95e9)
    assert "unknown load" in peak_source(2, {"flops": 1.0, "others_cores": None}, observed=0.0)
