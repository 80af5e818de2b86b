"""The two analysis notebooks execute headless (nbclient, kernel python3) with injected parameters."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from synthetic_study import write_synthetic_study

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "analysis" / "notebooks"
REFERENCE_DIR = Path(os.environ.get("DATASCALE_SHARED", REPO_ROOT.parent / "shared")) / "reference"


def execute(name: str, parameters: dict) -> nbformat.NotebookNode:
    """Run a notebook with ``parameters`` injected after its ``parameters``-tagged cell (as papermill
    does)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    (idx,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    src = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]}))
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def stream_text(nb: nbformat.NotebookNode) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "stream"
    )


def n_images(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )


def test_study_walkthrough_on_a_mini_study(tmp_path: Path) -> None:
    study = tmp_path / "mini_study"
    write_synthetic_study(
        study,
        sizes=(250_000, 500_000, 1_000_000, 2_000_000, 4_000_000),
        seeds=(0, 1),
        non_converged_sizes=(4_000_000,),
    )
    out = tmp_path / "out"
    nb = execute(
        "study_walkthrough", {"study_dir": str(study), "n_resamples": 40, "n_jobs": 1, "out_dir": str(out)}
    )
    text = stream_text(nb)
    assert "10 runs, 5 sizes, seeds [0, 1]" in text and "synthetic demo" not in text
    fj = json.loads((out / "fit.json").read_text())
    beta = float(re.search(r"^beta = ([0-9.e+-]+)", text, re.M).group(1))
    assert beta == fj["params"]["beta"]  # the notebook shows the package's numbers, at full precision
    assert n_images(nb) >= 4  # scaling curve, residuals, law comparison, per-domain curves
    assert (out / "report.md").is_file() and (out / "domains.png").is_file()


@pytest.mark.skipif(
    not (REFERENCE_DIR / "epoch_chinchilla_svg_extracted_data.csv").exists(),
    reason=f"reference data not found in {REFERENCE_DIR} (set DATASCALE_SHARED)",
)
def test_chinchilla_refit_reproduces_epoch(tmp_path: Path) -> None:
    nb = execute(
        "chinchilla_refit",
        {"reference_dir": str(REFERENCE_DIR), "n_resamples": 20, "n_jobs": 1, "out_dir": str(tmp_path)},
    )
    text = stream_text(nb)
    assert "245 rows read, 240 fitted" in text
    alpha = float(re.search(r"^alpha = ([0-9.e+-]+)", text, re.M).group(1))
    beta = float(re.search(r"^beta = ([0-9.e+-]+)", text, re.M).group(1))
    assert abs(alpha - 0.34731) < 1e-3 and abs(beta - 0.367172) < 1e-3  # Epoch's grid refit
    assert "20 resamples" in text
    assert (tmp_path / "isoflop.png").is_file() and n_images(nb) >= 2
