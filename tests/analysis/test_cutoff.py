"""Where the law extrapolates: a curve that is a power law only above a size is predicted only from there."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scaling_analysis.engine import get_law
from scaling_analysis.steps.cutoff import cutoff_scan, cutoff_section

SIZES = (4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000)


def steepening_curve() -> pd.DataFrame:
    """A clean power law from 32k up; below it the loss is flatter (the small-data region)."""
    loss = [2.0 + 400.0 * u**-0.4 if u >= 32_000 else 2.0 + 400.0 * 32_000**-0.4 * (32_000 / u) ** 0.1
            for u in SIZES]  # fmt: skip
    return pd.DataFrame({"U": np.array(SIZES, float), "loss": loss})


def test_the_scan_finds_the_cutoff_from_which_the_largest_size_is_predicted() -> None:
    scan = cutoff_scan(steepening_curve(), get_law("saturating_power_D"), "U", {"variables": {"D": "U"}}, 3)
    errors = {r["cutoff"]: r["rel_error"] for r in scan["rows"]}
    assert errors[4_000] > 0.03 and errors[32_000] < 0.005  # the whole range misses, the power-law part hits
    assert scan["first_within_target"] == 32_000 and scan["held_out"] == 256_000
    assert "From U = 32,000 up the law predicts the largest size within 3%" in cutoff_section(scan)


def test_the_scan_needs_five_sizes() -> None:
    few = steepening_curve().iloc[-4:]
    assert "skipped" in cutoff_scan(few, get_law("saturating_power_D"), "U", {"variables": {"D": "U"}}, 3)
