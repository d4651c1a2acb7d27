"""The study end to end: `pykernels-study --quick` runs, writes its report, results and plots, and its rows agree."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = subprocess.run(
        [sys.executable, "-m", "pykernels.study", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_quick_study_writes_report_results_and_plots(quick_study):
    out, stdout = quick_study
    assert "pykernels-study:" in stdout and "all fits agree" in stdout
    report = (out / "report.md").read_text()
    for heading in ("## Polynomial fit", "## Speed comparisons", "## Large problem", "## Batched fits"):
        assert heading in report
    assert "Command: `pykernels-study --quick" in report and "Machine:" in report
    for plot in ("poly_mse_traces.png", "poly_fit.png", "poly_times.png", "speed.png", "large.png"):
        data = (out / plot).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000, plot


def test_quick_study_rows_converge_to_the_same_mse(quick_study):
    out, _ = quick_study
    results = json.loads((out / "results.json").read_text())
    poly = results["sections"]["poly"]
    names = {row["name"] for row in poly["rows"]}
    assert {"numpy", "torch", "torch-autograd", "manual poly_mse step (cpp)", "fit_poly, fused loop (cpp)"} <= names
    fits = [row for row in poly["rows"] if row["group"] != "floor"]
    reference = next(row["final_mse"] for row in fits if row["name"] == "numpy")
    for row in fits:
        assert row["converged_same"] and abs(row["final_mse"] - reference) <= 1e-3 * reference, row["name"]
        every = row.get("trace_every", 1)
        assert len(row["trace"]) == -(-poly["extra"]["config"]["steps"] // every)
    assert poly["extra"]["optimum"]["mse"] < reference  # gradient descent stops short of the optimum
    skipped = {s["name"]: s["reason"] for s in poly["skipped"]}
    assert all(reason for reason in skipped.values())
    large = results["sections"]["large"]
    assert {row["lr"] for row in large["rows"]} == {1e-3, 0.5 / 100_000}
    for row in results["sections"]["batched"]["rows"]:
        assert row["converged_same"], row["name"]
