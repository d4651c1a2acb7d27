"""pykernels.study.limits: each fused row's limit is its work at the rate that bounds it, from the row's own section
config, on the CPU rows only."""

from __future__ import annotations

from pathlib import Path

import pytest

from pykernels.study import limits
from pykernels.study._common import SectionResult
from pykernels.study.report import read_results

COMMITTED = Path(__file__).resolve().parents[1] / "pykernels" / "study" / "results" / "cpu-2core"

RATES = {
    "fma_float32": 100e9,
    "fma_float64": 50e9,
    "dot_bytes": 40e9,
    "update_bytes": 30e9,
    "write_bytes": 20e9,
    "philox_normals": 1e9,
}


def _sections():
    poly = SectionResult("poly", extra={"config": {"samples": 100, "degree": 4, "steps": 1000}})
    poly.rows = [
        {"name": "fit_poly (gram), fused loop (cpp)", "device": "cpu", "seconds": 2e-6},
        {"name": "fit_poly, fused loop (cpp)", "device": "cpu", "seconds": 1e-4},
        {"name": "fit_poly, fused loop (cpp)", "device": "cuda", "seconds": 1e-4},  # not a CPU row: left out
        {"name": "torch", "device": "cpu", "seconds": 1.0},  # not a fused row: left out
    ]
    large = SectionResult("large", extra={"config": {"n": 1000}})
    row = {"device": "cpu", "lr": 0.001, "epochs": 10, "training_seconds": 1e-5, "total_seconds": 2e-5}
    large.rows = [
        {**row, "name": "pykernels linear_sgd_step (fused)", "sample_in_kernel": False},
        {**row, "name": f"{limits.PHILOX_ROW} (sample in-kernel, regenerated, never stored)", "sample_in_kernel": True},
    ]
    return {"poly": poly, "large": large}


def test_each_fused_cpu_row_gets_its_work_at_its_rate():
    rows = {r["name"]: r for r in limits.limit_rows(_sections(), RATES)}
    assert set(rows) == {
        "fit_poly (gram), fused loop (cpp)",
        "fit_poly, fused loop (cpp)",
        "pykernels linear_sgd_step (fused), lr 0.001",
        "pykernels linear_sgd_philox (sample in-kernel, regenerated, never stored), lr 0.001",
    }
    gram = rows["fit_poly (gram), fused loop (cpp)"]  # 40 per step x 1,000 steps + 15 per point x 100 points
    assert gram["limit_seconds"] == pytest.approx((40 * 1000 + 1500) / 50e9)
    assert gram["fraction"] == pytest.approx(gram["limit_seconds"] / 2e-6)
    data = rows["fit_poly, fused loop (cpp)"]  # 11 per point x 100 points x 1,000 steps, float32
    assert data["limit_seconds"] == pytest.approx(1.1e6 / 100e9)
    sgd = rows["pykernels linear_sgd_step (fused), lr 0.001"]  # per epoch: a dot pass and an update pass
    assert sgd["limit_seconds"] == pytest.approx(8000 / 40e9 + 12000 / 30e9)
    assert sgd["seconds"] == pytest.approx(1e-6)  # training seconds per epoch
    philox = rows["pykernels linear_sgd_philox (sample in-kernel, regenerated, never stored), lr 0.001"]
    assert philox["limit_seconds"] == pytest.approx(max(2000 / 1e9, 4000 / 40e9 + 8000 / 30e9))
    assert philox["seconds"] == pytest.approx(2e-6)  # the whole epoch: its samples are drawn inside it


def test_every_model_names_a_row_of_the_committed_run():
    """A renamed study row must not silently drop out of the limits: each model's row is in the committed run (all
    sections, on the CPU), and has its limit there."""
    run = read_results(COMMITTED / "results.json")
    ran = {(key, row["name"]) for key, section in run.sections.items() for row in section.rows if "name" in row}
    limited = {row["name"].split(", lr ")[0] for row in run.sections["limits"].rows}
    for key, name, bound, _ in limits.MODELS:
        assert (key, name) in ran and name in limited, (key, name)
        assert bound in limits.BOUND_WORDS
