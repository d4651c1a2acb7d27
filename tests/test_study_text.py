"""The study's computed sentences, from synthetic rows: what they claim follows the numbers they are given (the
end-to-end run is in test_study.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pykernels.study import _common, large, report
from pykernels.study.__main__ import summary_line
from pykernels.study._common import SectionResult


def _large_row(lr: float, ratio: float, diverged_at: int | None = None, name: str = "row") -> dict:
    return {
        "name": name,
        "lr": lr,
        "first_loss": 1e6,
        "diverged_at_epoch": diverged_at,
        "weight_error_ratio": ratio,
    }


@pytest.mark.parametrize(
    ("value", "digits", "text"),
    [
        (3154.2, 3, "3,154"),  # every digit of the integer part, with thousands separators
        (0.007910, 3, "0.00791"),
        (0.000993, 3, "0.000993"),
        (0.00001, 3, "0.00001"),
        (0.99996, 3, "1"),  # rounded to 3 digits, trailing zeros dropped
        (0.999989, 6, "0.999989"),
        (999.96, 3, "1,000"),
        (3.65e6, 3, "3.65 million"),
        (6.25e7, 3, "62.5 million"),
        (1.2e9, 2, "1.2 billion"),
        (3.43266e121, 6, "3.43266·10^121"),
        (2.4e-16, 2, "2.4·10^-16"),
        (5e-8, 3, "5·10^-8"),
        (-1e-7, 6, "-10^-7"),
        (1e-10, 2, "10^-10"),
        (9.996e13, 3, "10^14"),  # the mantissa rounded up to 10 moves the exponent
        (0, 3, "0"),
        (None, 3, "–"),
        (math.nan, 3, "–"),  # not measured: never "nan"
        (999_999.5, 3, "1 million"),  # the range follows the number as written, not 1,000,000
        (999_999_999.7, 3, "1 billion"),  # not "1,000 million"
        (999.96e9, 3, "10^12"),  # past a billion billions: a power of ten
        (5e-324, 3, "4.94·10^-324"),  # the smallest float: no division by 10**-324 (which is 0)
    ],
)
def test_numbers_are_written_plainly(value, digits, text):
    assert _common.plain(value, digits) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3154.2, "3,200x"),  # two significant digits: a single short timing bears no more
        (22_586, "23,000x"),
        (1079.6, "1,100x"),
        (391.2, "390x"),
        (16.9, "17x"),
        (2.75, "2.8x"),
        (0.286, "0.29x"),
        (9.96, "10x"),
        (1.0, "1.0x"),
        (None, "–"),
        (math.nan, "–"),  # not measured: a dash, never "nanx"
        (math.inf, "–"),
        (0.0, "–"),  # a time of 0 or less is no measurement
        (1e25, "10^25x"),  # no float noise: 10,000,000,000,000,000,905,969,664x
        (1.23e7, "12 million x"),
    ],
)
def test_speedups_are_written_plainly(value, text):
    assert _common.speedup(value) == text


@pytest.mark.parametrize(("n", "words"), [(10_000_000, "10^7"), (100_000, "10^5"), (123_456, "123,456")])
def test_sizes_are_worded_from_the_n_that_ran(n, words):
    assert large.size_words(n) == words


def test_the_weight_error_model_follows_the_update_rule():
    """e' = e - 2 lr (e.x) x for x ~ N(0, I): the mean square and the mean log of |e'|^2 / |e|^2, checked by
    sampling; at the write-up's lr and N = 10^7 the mean square is 41x an epoch, a typical path far less."""
    import numpy as np

    rng = np.random.default_rng(0)
    n, lr = 50, 0.01
    e = rng.standard_normal(n)
    x = rng.standard_normal((200_000, n))
    factors = np.sum((e - 2 * lr * (x @ e)[:, None] * x) ** 2, axis=1) / np.sum(e**2)
    model = large.WeightErrorModel(lr, n, epochs=2)
    assert np.mean(factors) == pytest.approx(model.mean_square_per_epoch, rel=0.01)
    assert np.exp(np.mean(np.log(factors)) / 2) == pytest.approx(model.typical_ratio, rel=0.01)
    assert np.std(np.log(factors)) * math.sqrt(2) / 2 == pytest.approx(model.log_spread, rel=0.05)
    write_up = large.WeightErrorModel(1e-3, 10_000_000, epochs=2)
    assert write_up.mean_square_per_epoch == pytest.approx(41.0, rel=1e-3)
    assert 10 < write_up.typical_ratio < 25  # over 2 epochs: a typical epoch's factor on the squared error


def test_each_lr_note_is_checked_against_its_rows():
    config = large.LargeConfig(n=100_000, epochs=20)
    model = large.WeightErrorModel(config.stable_lr, config.n, config.epochs)
    agreeing = [_large_row(config.stable_lr, model.typical_ratio, name="a")]
    agreeing.append(_large_row(config.stable_lr, math.exp(math.log(model.typical_ratio) + model.log_spread), name="b"))
    note = large.learning_rate_notes(agreeing, config)[0]
    assert "shrinks" in note and "2 of 2 rows" in note and "Not as predicted" not in note
    assert "after 20 epochs" in note and "cannot fit 10^5 weights" in note
    grew, blew = _large_row(config.stable_lr, 1.5, name="grew"), _large_row(config.stable_lr, 1, 3, "blew")
    note = large.learning_rate_notes([*agreeing, grew, blew], config)[0]
    assert "**Not as predicted: grew, blew.**" in note
    assert "within one run's spread" in note  # x0.9999 over 20 epochs: not measurably different from no change
    # where the predicted shrink is many spreads wide, weights that never moved contradict it
    long_run = large.LargeConfig(n=1000, epochs=2000)
    unmoved = _large_row(long_run.stable_lr, 1.0, name="never moved")
    note = large.learning_rate_notes([unmoved], long_run)[0]
    assert "**Not as predicted: never moved.**" in note and "within one run's spread" not in note


def test_overflow_is_predicted_from_the_first_loss_and_the_growth():
    config = large.LargeConfig(n=10_000_000, epochs=200)
    diverging = [_large_row(config.seed_lr, math.inf, diverged_at=27)]
    note = large.learning_rate_notes(diverging, config)[0]
    assert "grows" in note and "1 of 1 rows overflowed" in note and "Not as predicted" not in note
    finite = [_large_row(config.seed_lr, 3.0, name="stayed finite")]
    assert "Not as predicted: stayed finite" in large.learning_rate_notes(finite, config)[0]


def test_the_write_up_figure_stands_only_in_the_row_it_measured():
    config = large.LargeConfig()
    autograd = {"name": "torch-autograd", "device": "cpu", "lr": config.seed_lr}
    assert large.write_up_ms_per_epoch(autograd, config) == pytest.approx(161.5)
    assert large.write_up_ms_per_epoch({**autograd, "lr": config.stable_lr}, config) is None
    assert large.write_up_ms_per_epoch({**autograd, "name": "pykernels dot+backward"}, config) is None
    assert large.write_up_ms_per_epoch(autograd, large.LargeConfig(n=100_000, epochs=20)) is None


def _row(name: str, converged_same: bool | None, busy: bool = False) -> dict:
    share = 0.5 if busy else 0.01
    load = {"load_average_before": 1.0, "load_average_after": 1.0, "others_cpu_share": share, "busy": busy}
    return {
        "name": name,
        "group": "floor" if converged_same is None else "pykernels",
        "converged_same": converged_same,
        "us_per_step": 1.0,
        "speedup": 1.0,
        "load": load,
    }


def test_a_row_that_does_not_fit_is_never_counted_as_agreeing():
    sections = {
        "poly": SectionResult("poly", rows=[_row("fit", True), _row("floor", None)], extra={"reference_row": "fit"})
    }
    line = summary_line(sections, 1.0, Path("report.md"))
    assert "all 1 fits agree" in line and "floor" not in line.split("fastest fit")[1].split(" at ")[0]
    sections["poly"].rows.append(_row("bad", False))
    assert "FLAGGED: bad" in summary_line(sections, 1.0, Path("report.md"))


def test_rows_measured_under_load_are_flagged():
    rows = [_row("quiet", True), _row("loaded", True, busy=True)]
    assert "1 of 2 rows: `loaded`" in _common.busy_note(rows)
    assert _common.busy_note(rows[:1]) is None
    assert _common.load_cell(rows[1]).startswith("**busy: 50%") and not _common.load_cell(rows[0]).startswith("**")
    sections = {"poly": SectionResult("poly", rows=rows, extra={"reference_row": "quiet"})}
    assert "1 rows measured under load" in summary_line(sections, 1.0, Path("report.md"))


def test_the_load_meter_sees_other_processes_using_the_cpus():
    """Two spinning processes on a 2-CPU share of the machine: at least half of its CPU time is theirs (more if the
    machine is busier still), and the row is flagged."""
    import os
    import subprocess
    import sys
    import time

    busy_loop = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    spinners = [subprocess.Popen([sys.executable, "-c", busy_loop]) for _ in range(min(2, os.cpu_count() or 1))]
    try:
        time.sleep(0.3)
        with _common.LoadMeter() as meter:
            time.sleep(0.8)
    finally:
        for spinner in spinners:
            spinner.wait()
    result = meter.result()
    if result["others_cpu_share"] is None:
        pytest.skip("no /proc/stat")
    assert result["others_cpu_share"] >= 0.5 * len(spinners) / (os.cpu_count() or 1) and result["busy"]


COMMITTED = Path(__file__).resolve().parents[1] / "pykernels" / "study" / "results" / "cpu-2core"


def test_the_committed_report_is_what_the_code_writes_from_its_results(tmp_path):
    """``--from-results`` rewrites a run's report from its results.json; on the committed reference run it gives the
    committed report byte for byte, so a change to the report's text cannot leave the committed one behind."""
    from pykernels.study.__main__ import main

    assert main(["--from-results", str(COMMITTED / "results.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == (COMMITTED / "report.md").read_text()
    assert {p.name for p in tmp_path.glob("*.png")} == {p.name for p in COMMITTED.glob("*.png")}


def test_the_committed_report_is_valid_markdown_in_plain_numbers():
    """Every table of the committed report parses as a table, each row as wide as its header, and no number is
    written in e-notation."""
    from conftest import markdown_report_problems

    text = (COMMITTED / "report.md").read_text()
    assert markdown_report_problems(text) == []
    assert text.count("\n|---") == 9  # poly, speed, large, batched, the statistics' three, limits' two: all parsed


def test_the_markdown_check_finds_broken_tables_and_e_notation():
    """The check can fail: a header whose `|w - 3|` adds cells parses as a paragraph, a long row loses its extra
    cells, and 3.15e+03x is e-notation."""
    from conftest import markdown_report_problems

    broken_header = "| row | error |w - 3| |\n|---|---|\n| a | 1 |\n"
    assert markdown_report_problems(broken_header) == ["1 table blocks written, 0 parsed as tables"]
    long_row = "| row | speedup |\n|---|---|\n| a | 1 | 2 |\n"
    assert markdown_report_problems(long_row) == ["table 1, line 3: 3 cells written, 2 parsed, 2 in the header"]
    assert markdown_report_problems("fused fit: 3.15e+03x numpy\n") == ["e-notation: '3.15e+03x'"]


def test_table_cells_escape_pipes_and_rows_match_the_header():
    from conftest import markdown_report_problems

    table = report._table(["row", "weights' RMS error |w - 3|"], [["`a|b`", "1"]])
    assert table.splitlines()[0] == "| row | weights' RMS error \\|w - 3\\| |"
    assert table.splitlines()[2] == "| `a\\|b` | 1 |"
    assert markdown_report_problems(table) == []
    with pytest.raises(AssertionError, match="a row of 1 cells under a header of 2"):
        report._table(["row", "seconds"], [["a"]])


def test_skipped_rows_are_collapsed_by_reason():
    section = SectionResult(
        "large",
        skipped=[
            _common.Skipped("torch-gpu lr=0.001", "no CUDA GPU"),
            _common.Skipped("torch-gpu lr=5e-08", "no CUDA GPU"),
            _common.Skipped("fit_poly, fused loop (cpp)-gpu", "no CUDA GPU"),
            _common.Skipped("jax.jit(step)", "jax not installed (optional)"),
        ],
    )
    assert report._skipped(section) == (
        "\n\nNot run here: 3 rows (no CUDA GPU): `torch-gpu` at lr 0.001 and 5·10^-8, "
        "`fit_poly, fused loop (cpp)-gpu`; 1 row (jax not installed (optional)): `jax.jit(step)`."
    )
    assert report._skipped(SectionResult("none")) == ""


def _committed_run() -> report.SavedRun:
    return report.read_results(COMMITTED / "results.json")


def _poly_row(run: report.SavedRun, name: str) -> dict:
    return next(r for r in run.sections["poly"].rows if r["name"] == name)


def test_the_answer_is_on_the_first_screen_and_names_the_write_ups_in_order():
    lines = (COMMITTED / "report.md").read_text().splitlines()
    first_screen = "\n".join(lines[:30])
    assert "## The answer" in first_screen and "**GPU**" in first_screen
    polynomial, speed = first_screen.index("The polynomial write-up"), first_screen.index("The speed write-up")
    assert polynomial < speed
    assert "Chuck Anderson" in first_screen and "nbviewer.ipython.org" in first_screen and "2020-01-04" in first_screen
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[1].startswith("## Polynomial fit") and headings[-1] == "## How this was measured"
    assert "write-up 1" not in "\n".join(lines) and "write-up 2" not in "\n".join(lines)


def test_the_answers_numbers_follow_the_rows():
    """The first screen's figures are computed from the rows: change a row and the sentence follows."""
    run = _committed_run()
    torch_row, autograd = _poly_row(run, "torch"), _poly_row(run, "torch-autograd")
    manual = _poly_row(run, "manual poly_mse step (cpp)")
    text = report.answer(run.sections, run.machine)
    ratio = autograd["seconds"] / torch_row["seconds"]
    assert f"{_common.speedup(ratio)} the manual-gradient `torch` row's" in text
    assert f"(`manual poly_mse step (cpp)`) {_common.speedup(autograd['seconds'] / manual['seconds'])}" in text
    gram_fit = _poly_row(run, "fit_poly (gram), fused loop (cpp)")
    assert f"{_common.speedup(_poly_row(run, 'numpy')['seconds'] / gram_fit['seconds'])}." in text
    assert "None on this machine, so its 32 GPU rows did not run".lower() in text.lower()
    large_rows = run.sections["large"].rows
    seed = next(r for r in large_rows if r["name"] == "torch-autograd" and r["lr"] == 0.001)
    assert f"takes {seed['epoch_ms']:.2f} ms here" in text and "6 of 6 rows' loss overflows" in text

    autograd["seconds"] = 8 * torch_row["seconds"]  # as the write-up found
    manual["seconds"] = autograd["seconds"] / 100
    text = report.answer(run.sections, run.machine)
    assert "8.0x the manual-gradient `torch` row's" in text
    assert "(`manual poly_mse step (cpp)`) 100x" in text
    _poly_row(run, "numpy")["converged_same"] = False
    assert "1 of 16 fits did not reach the same MSE: `numpy`" in report.answer(run.sections, run.machine)


def test_the_answer_reports_a_gpu_run():
    run = _committed_run()
    poly = run.sections["poly"]
    autograd = _poly_row(run, "torch-autograd")
    poly.rows.append({**autograd, "name": "torch-autograd-gpu", "device": "cuda", "seconds": autograd["seconds"] / 4})
    text = report.answer(run.sections, {**run.machine, "gpu": "NVIDIA H200"})
    assert "**GPU** (NVIDIA H200): the write-up's autograd loop, `torch-autograd-gpu`" in text
    assert "(4.0x `torch-autograd` on the CPU)" in text


def test_the_summary_line_writes_plain_numbers():
    fused = {**_row("fit_poly (gram), fused loop (cpp)", True), "us_per_step": 0.0000497, "speedup": 3154.2}
    sections = {"poly": SectionResult("poly", rows=[_row("numpy", True), fused], extra={"reference_row": "numpy"})}
    line = summary_line(sections, 1.0, Path("report.md"))
    assert "at 0.0000497 µs/step (3,200x numpy)" in line


def _edited_results(tmp_path: Path, edit) -> Path:
    """The committed results.json, changed by ``edit(payload)`` (the parsed JSON), written into tmp_path."""
    import json

    payload = json.loads((COMMITTED / "results.json").read_text())
    edit(payload)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(payload))
    return path


def _poly_json_row(payload: dict, name: str) -> dict:
    return next(r for r in payload["sections"]["poly"]["rows"] if r["name"] == name)


def _diverge_trace(payload: dict) -> None:
    row = _poly_json_row(payload, "manual poly_mse step (cpp)")
    row["trace"][-1] = "inf"
    row["final_mse"], row["converged_same"] = "inf", False


def _diverge_time(payload: dict) -> None:
    row = _poly_json_row(payload, "torch")
    row["us_per_step"], row["speedup"] = "inf", 0.0


def _nan_trace(payload: dict) -> None:
    row = _poly_json_row(payload, "numpy")
    row["trace"][5:] = ["nan"] * (len(row["trace"]) - 5)
    row["final_mse"], row["converged_same"] = "nan", False


@pytest.mark.parametrize("edit", [_diverge_trace, _diverge_time, _nan_trace], ids=["inf-trace", "inf-time", "nan"])
def test_a_diverging_row_is_reported_and_plotted_not_a_crash(tmp_path, edit):
    """A fit whose MSE or time is not finite still gets its report, its results.json and every plot."""
    from pykernels.study.__main__ import main

    out = tmp_path / "out"
    assert main(["--from-results", str(_edited_results(tmp_path, edit)), "--out", str(out)]) in (0, 1)
    text = (out / "report.md").read_text()
    assert "could not be drawn" not in text
    assert {p.name for p in out.glob("*.png")} == {p.name for p in COMMITTED.glob("*.png")}
    sections = report.read_results(out / "results.json").sections.keys()
    assert sections == {"poly", "speed", "large", "batched", "gram", "limits"}


def test_a_plot_that_fails_is_named_in_the_report_and_costs_nothing_else(tmp_path, monkeypatch):
    """results.json and report.md are written whatever a figure does; the failed figure gets a line in the report."""
    from pykernels.study import plots

    def broken(section):
        raise ValueError("Axis limits cannot be NaN or Inf")

    monkeypatch.setitem(plots.FIGURES["poly"], "poly_times.png", broken)
    run = _committed_run()
    report.write(tmp_path, run.sections, run.machine, run.command, run.settings)
    text = (tmp_path / "report.md").read_text()
    assert "plot poly_times.png could not be drawn: ValueError: Axis limits cannot be NaN or Inf" in text
    assert (tmp_path / "results.json").exists() and (tmp_path / "poly_mse_traces.png").exists()
    assert not (tmp_path / "poly_times.png").exists()


def _drop_format(payload: dict) -> None:
    del payload["format"]


def _no_machine_keys(payload: dict) -> None:
    payload["machine"] = {}


def _bogus_section(payload: dict) -> None:
    payload["sections"]["bogus"] = payload["sections"]["speed"]


def _no_reference_row(payload: dict) -> None:
    del payload["sections"]["poly"]["extra"]["reference_row"]


def _not_an_object(payload: dict) -> None:
    payload.clear()
    payload["format"] = [1]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_drop_format, 'no "format" field: written by an older pykernels-study'),
        (_no_machine_keys, "\"machine\" lacks 'cpu', 'logical_cpus'"),
        (_bogus_section, "unknown section(s) 'bogus'"),
        (_no_reference_row, 'section "poly"\'s "extra" lacks \'reference_row\''),
        (_not_an_object, "format [1], but this pykernels-study reads format 1"),
    ],
    ids=["no-format", "machine", "bogus-section", "reference-row", "format"],
)
def test_a_results_file_that_does_not_fit_is_one_line_and_exit_2(tmp_path, capsys, edit, words):
    """--from-results names what a results.json lacks in one line, exits 2 and leaves --out as it was."""
    from pykernels.study.__main__ import main

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the earlier report")
    assert main(["--from-results", str(_edited_results(tmp_path, edit)), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert words in error and len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert [p.name for p in out.iterdir()] == ["report.md"] and (out / "report.md").read_text() == "the earlier report"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch folder left behind


def _zero_seconds(payload: dict) -> None:
    _poly_json_row(payload, "torch")["seconds"] = 0.0


def _no_numpy_row(payload: dict) -> None:
    rows = payload["sections"]["poly"]["rows"]
    rows[:] = [r for r in rows if r["name"] not in ("numpy", "numpy float64")]
    payload["sections"]["poly"]["extra"]["reference_row"] = "torch"
    payload["sections"]["poly"]["extra"].pop("mse_reference_row", None)


@pytest.mark.parametrize("edit", [_zero_seconds, _no_numpy_row], ids=["zero-seconds", "no-numpy-row"])
def test_a_saved_run_with_odd_rows_is_still_written(tmp_path, edit):
    """A time of 0 gives no speedup (a dash), not a ZeroDivisionError; a run without the numpy row is written."""
    from pykernels.study.__main__ import main

    out = tmp_path / "out"
    assert main(["--from-results", str(_edited_results(tmp_path, edit)), "--out", str(out)]) == 0
    assert "nan" not in (out / "report.md").read_text().split("## How this was measured")[0].replace("nan`", "")


@pytest.mark.parametrize(
    "flags",
    [["--only", "gram"], ["--quick"], ["--steps", "5"], ["--device", "cpu"], ["--repeat", "3"], ["--thp"]],
)
def test_from_results_refuses_the_flags_that_measure(tmp_path, capsys, flags):
    from pykernels.study.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--from-results", str(COMMITTED / "results.json"), "--out", str(tmp_path), *flags])
    assert exit_info.value.code == 2
    assert f"not allowed with {flags[0]}" in capsys.readouterr().err


def test_from_results_exits_1_when_rows_are_flagged(tmp_path):
    """The saved run's own exit status: 1 when a fit did not reach the reference's MSE, as the live run returns."""
    from pykernels.study.__main__ import main

    def flag(payload: dict) -> None:
        _poly_json_row(payload, "torch")["converged_same"] = False

    assert main(["--from-results", str(_edited_results(tmp_path, flag)), "--out", str(tmp_path / "o")]) == 1


def test_results_json_is_standard_json_with_non_finite_values_as_strings(tmp_path):
    """NaN and inf, in scalars and in arrays alike, are written as strings (JSON has no literal for them) and read
    back as floats; the committed results.json holds no NaN/Infinity literal."""
    import json

    import numpy as np

    assert report._jsonable({"a": np.array([1.0, np.nan, np.inf]), "b": -math.inf}) == {
        "a": [1.0, "nan", "inf"],
        "b": "-inf",
    }
    assert json.loads((COMMITTED / "results.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    run = _committed_run()
    run.sections["poly"].rows[0]["trace"] = np.array([1.0, np.nan])
    report.write(tmp_path, run.sections, run.machine, run.command, run.settings)
    saved = report.read_results(tmp_path / "results.json").sections["poly"].rows[0]["trace"]
    assert saved[0] == 1.0 and math.isnan(saved[1])


@pytest.mark.parametrize(
    ("ratio", "diverged_at", "kind", "words"),
    [
        (42.7, None, large.DIVERGING, "the weights' RMS error grows (x42.7 of its start, no overflow yet)"),
        (math.inf, 27, large.OVERFLOWED, "rows' loss overflows (by epoch 27)"),
        (0.99999, None, large.NOT_LEARNING, "are stable but barely move"),
        (0.3, None, large.TRAINING, "train (the weights' RMS error ends at x0.3 of its start)"),
    ],
)
def test_does_it_train_follows_the_weights_error(ratio, diverged_at, kind, words):
    """A row that did not overflow is not called stable when its weights' error grew (a quick run's x42.7); the
    report and large_loss.png use the one classification."""
    from pykernels.study import plots

    run = _committed_run()
    seed_lr = run.sections["large"].extra["config"]["seed_lr"]
    rows = [r for r in run.sections["large"].rows if r["lr"] == seed_lr]
    for row in rows:
        row["weight_error_ratio"], row["diverged_at_epoch"] = ratio, diverged_at
    assert {large.outcome(r) for r in rows} == {kind}
    text = report.answer(run.sections, run.machine)
    sentence = next(line for line in text.splitlines() if "Does it train?" in line)
    assert words in sentence.split("At the stable lr")[0]
    assert ("At the write-up's lr 0.001, yes" in sentence) == (kind == large.TRAINING)
    assert plots.outcome_words(rows) == {
        large.OVERFLOWED: "overflows",
        large.DIVERGING: "diverging: the error grows",
    }.get(kind, kind)


def test_a_gpu_machine_without_gpu_rows_says_none_ran():
    run = _committed_run()
    text = report.answer(run.sections, {**run.machine, "gpu": "NVIDIA H200"})
    assert "**GPU** (NVIDIA H200): present, but no GPU row ran" in text and "its rows are in the tables" not in text


def test_without_the_numpy_row_the_reference_is_named_for_what_it_is():
    """A run without the numpy rows (--device cuda) compares with the row that is its reference, and never calls
    a row that is not the float64 one exact gradient descent."""
    run = _committed_run()
    poly = run.sections["poly"]
    poly.rows[:] = [r for r in poly.rows if r["group"] not in ("reference",) and r["name"] != "numpy"]
    poly.extra["reference_row"] = poly.extra["mse_reference_row"] = "torch"
    text = report.answer(run.sections, run.machine)
    assert "(the `torch` row: " in text and "exact gradient descent:" not in text
    table = report.poly_markdown(poly)
    assert (
        "against `torch` (this run has no `numpy` row" in table and "`torch` (the write-up's NumPy loop)" not in table
    )


@pytest.mark.parametrize("name", ["manual poly_mse step (cpp)", "torch-autograd"])
def test_a_row_that_did_not_fit_gets_no_speedup_in_the_answer(name):
    run = _committed_run()
    row = _poly_row(run, name)
    row["final_mse"], row["converged_same"] = math.nan, False
    text = report.answer(run.sections, run.machine)
    assert f"**1 of 16 fits did not reach the same MSE: `{name}`**" in text
    assert f"(`{name}`) " not in text and f"`{name}` takes" not in text and "nan" not in text


@pytest.mark.parametrize(
    ("only", "present", "absent"),
    [
        (["gram"], ["none of the write-ups' own sections", "**GPU**: none on this machine."], ["6.16 ms", "GPU rows"]),
        (["speed"], ['"Speed comparisons" table)', "6.16 ms"], ["Large problem", "polynomial write-up**"]),
        (["large"], ['"Large problem" table)'], ["Speed comparisons", "6.16 ms"]),
        ([], ["none of the write-ups' own sections"], ["6.16 ms"]),
    ],
)
def test_the_answer_speaks_only_of_the_sections_that_ran(only, present, absent):
    run = _committed_run()
    sections = {key: section for key, section in run.sections.items() if key in only}
    text = report.answer(sections, run.machine)
    for words in present:
        assert words in text
    for words in absent:
        assert words not in text
    closing = report._closing(sections)
    assert ("Every number above comes from the tables" in closing) == bool(only)


@pytest.mark.parametrize("field", ["epoch_ms", "seconds"])
def test_a_time_that_was_not_measured_never_reaches_the_answer_as_nan(field):
    run = _committed_run()
    if field == "epoch_ms":
        row = next(r for r in run.sections["large"].rows if r["name"] == "torch-autograd" and r["lr"] == 0.001)
    else:
        row = _poly_row(run, "torch")
    row[field] = math.nan
    for key, section in run.sections.items():
        report.DESCRIBE[key](section)
    text = report.answer(run.sections, run.machine) + "\n".join(n for s in run.sections.values() for n in s.notes)
    assert "nan" not in text.replace("nanoseconds", "") and "–x" not in text


def test_the_summary_line_names_the_fastest_row_that_fit():
    fast_but_wrong = {**_row("torch", False), "us_per_step": 0.001, "speedup": 9e3}
    unmeasured = {**_row("jax", True), "us_per_step": math.nan, "speedup": math.nan}
    fused = {**_row("fit_poly (gram), fused loop (cpp)", True), "us_per_step": 0.0000497, "speedup": 3154.2}
    rows = [_row("numpy", True), unmeasured, fast_but_wrong, fused]
    sections = {"poly": SectionResult("poly", rows=rows, extra={"reference_row": "numpy"})}
    line = summary_line(sections, 1.0, Path("report.md"))
    assert "fastest fit fit_poly (gram), fused loop (cpp)" in line and "FLAGGED: torch" in line
