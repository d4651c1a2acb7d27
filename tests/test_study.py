"""The study end to end: `pykernels-study --quick` runs, writes its report, results and plots, and its rows agree."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import markdown_report_problems

from pykernels.study._common import plain

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
    assert "pykernels-study:" in stdout
    report = (out / "report.md").read_text()
    for heading in (
        "## Polynomial fit",
        "## Speed comparisons",
        "## Large problem",
        "## Batched fits",
        "## How far each fused row is from this machine's limit",
    ):
        assert heading in report
    assert "Command: `pykernels-study --quick" in report and "Machine:" in report
    for plot in ("poly_mse_traces.png", "poly_fit.png", "poly_times.png", "speed.png", "large.png", "limits.png"):
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


def test_quick_report_says_what_ran_and_what_it_measured(quick_study):
    """Every sentence of the quick report follows its own settings and results: the floor row is not a fit, the
    large problem's wording follows the N and epochs that ran, each lr's claim agrees with the rows at that lr, the
    write-up's figures stand only where the sizes match, and rows measured under load are marked."""
    out, stdout = quick_study
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    sections = results["sections"]

    poly = sections["poly"]["rows"]
    floor = next(row for row in poly if row["group"] == "floor")
    assert floor["converged_same"] is None and floor["mse_deviation"] is None
    assert f"`{floor['name']}` | floor |" in report and "| not a fit |" in report
    fits = [row for row in (r for section in sections.values() for r in section["rows"]) if "converged_same" in row]
    fits = [row for row in fits if row["converged_same"] is not None]
    assert f"all {len(fits)} fits agree" in stdout

    settings, large = results["settings"], sections["large"]
    n, epochs = settings["large_n"], settings["large_epochs"]
    assert (n, epochs) == (100_000, 20)
    assert "## Large problem: 10^5-weight" in report and "10^7-weight" not in report
    assert f"after {epochs} epochs" in report and "cannot fit 10^5 weights" in report
    assert "With 10^7 weights" not in report and "200 epochs cannot" not in report
    stable_lr = large["extra"]["config"]["stable_lr"]
    stable_note = next(note for note in large["notes"] if note.startswith(f"lr = {plain(stable_lr)}"))
    assert "shrinks" in stable_note and "Not as predicted" not in stable_note
    for row in large["rows"]:
        assert row["write_up_ms_per_epoch"] is None  # the write-up ran N = 10^7 for 200 epochs, not these
        if row["lr"] == stable_lr:  # the claim the note makes, row by row
            assert row["diverged_at_epoch"] is None and row["weight_error_ratio"] < 1, row["name"]
    for row in sections["speed"]["rows"]:  # the write-up's seconds stand only beside its own sizes (add ran smaller)
        assert (row["write_up_seconds"] is None) == (row["workload"] == "add"), row

    timed = {name: [r for r in section["rows"] if r.get("kind") != "boundary"] for name, section in sections.items()}
    assert all("load" not in row for row in sections["gram"]["rows"] if row["kind"] == "boundary")  # errors, untimed
    for name, section in sections.items():
        for row in timed[name]:
            load, cpus = row["load"], results["machine"]["logical_cpus"]
            if load["others_cpu_share"] is None:  # a window too short to tell is never called busy
                assert not load["busy"]
            else:
                assert 0 <= load["others_cpu_share"] <= 1
                assert load["busy"] == (load["others_cpu_share"] * cpus > 0.2)
        busy = [row for row in timed[name] if row["load"]["busy"]]
        assert any(note.startswith("Measured under load") for note in section["notes"]) == bool(busy)
    assert report.count("**busy:") == sum(r["load"]["busy"] for rows in timed.values() for r in rows)


def test_quick_report_is_valid_markdown_in_plain_numbers(quick_study):
    """The quick run's report parses as written (every table a table, each row as wide as its header), and neither
    it nor the summary line writes a number in e-notation."""
    out, stdout = quick_study
    assert markdown_report_problems((out / "report.md").read_text()) == []
    assert markdown_report_problems(stdout) == []


def test_quick_study_fits_on_statistics(quick_study):
    """The gram rows reach exact gradient descent's MSE, every fit is checked against that float64 row, the
    boundary table's errors stay under their bounds and auto's choice follows them, and the sharded fit issues two
    collectives (a layout check, the sums) where DDP issues one per step."""
    out, _ = quick_study
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    poly = results["sections"]["poly"]
    assert poly["extra"]["mse_reference_row"] == "numpy, float64 weights (exact gradient descent)"
    gram_rows = [row for row in poly["rows"] if row["name"].startswith("fit_poly (gram)")]
    assert {row["name"] for row in gram_rows} >= {"fit_poly (gram), fused loop (cpp)"}
    exact = next(row for row in poly["rows"] if row["group"] == "reference")
    for row in gram_rows:  # float64 iterates: on exact gradient descent, not float32's ~1e-3 above it
        assert row["converged_same"] and abs(row["final_mse"] - exact["final_mse"]) <= 1e-6 * exact["final_mse"]

    assert "## Fits on sufficient statistics" in report
    section = results["sections"]["gram"]
    tolerance = 1e-10
    boundary = [row for row in section["rows"] if row["kind"] == "boundary"]
    assert len(boundary) >= 6
    for row in boundary:
        for result in row["results"]:
            assert result["gram_error"] <= result["bound"], row["name"]
            assert (result["auto"] == "gram") == (result["bound"] <= tolerance), row["name"]
            assert result["data_error"] < 1e-12, row["name"]
    gram_route, ddp_route = section["extra"]["sharded"]["rows"]
    steps = section["extra"]["config"]["sharded_steps"]
    assert gram_route["collectives"] == {"gloo:all_gather": 1, "gloo:all_reduce": 1}  # the layout check, the sums
    assert ddp_route["collectives"]["gloo:all_reduce"] >= steps  # a gradient all-reduce per step
    assert gram_route["coeffs_vs_one_process"] < 1e-12


def test_quick_study_measures_every_fused_row_against_its_limit(quick_study):
    """Every CPU row that limits.MODELS names and that ran has its limit: a positive time at the rate measured in
    the same run, and a fraction that is that time over the row's."""
    from pykernels.study import limits

    out, _ = quick_study
    sections = json.loads((out / "results.json").read_text())["sections"]
    rows = {row["name"]: row for row in sections["limits"]["rows"]}
    rates = sections["limits"]["extra"]["rates"]
    assert all(rates[key] > 0 for key in ("fma_float32", "fma_float64", "dot_bytes", "update_bytes", "philox_normals"))
    ran = {(key, row["name"]) for key, section in sections.items() for row in section["rows"] if "name" in row}
    expected = [(key, name) for key, name, _, _ in limits.MODELS if (key, name) in ran]
    assert len(rows) >= len(expected) > 10
    for row in rows.values():
        assert row["limit_seconds"] > 0 and row["fraction"] == pytest.approx(row["limit_seconds"] / row["seconds"])
