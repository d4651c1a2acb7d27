"""The study's outputs: report.md (tables, machine, command), results.json and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import batched, gram, large, limits, plots, polyfit, speed
from ._common import (
    BUSY_CPUS,
    SectionResult,
    Skipped,
    load_cell,
    mse_reference_row,
    named_row,
    plain,
    ratio,
    skipped_by_reason,
    speedup,
)
from .large import WeightErrorModel, size_words
from .polyfit import WRITE_UP_AUTOGRAD_OVER_TORCH, write_up_says


def _loads(loads: tuple[float, ...] | None) -> str:
    return "–" if loads is None else ", ".join(f"{v:.2f}" for v in loads)


def _cell(text: str) -> str:
    """A table cell: a pipe would end the cell early, so it is escaped (also inside code spans, as GFM reads them)."""
    return text.replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown (GFM) table; every row has the header's number of cells, or the table would not render."""
    for row in rows:
        assert len(row) == len(header), f"a row of {len(row)} cells under a header of {len(header)}: {row}"
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _agreement(converged_same: bool | None) -> str:
    """The "same MSE" cell: a row that does not fit (the floor) agrees with nothing."""
    return "not a fit" if converged_same is None else "yes" if converged_same else "**NO**"


def _skipped(section: SectionResult) -> str:
    """The rows that did not run, one clause per reason: "Not run here: 12 rows (no CUDA GPU): `a`, `b`, ...". A row
    skipped at several learning rates (named "row lr=0.001") is named once, with its rates."""
    clauses = []
    for reason, skipped_names in skipped_by_reason(section).items():
        names: dict[str, list[str]] = {}
        for skipped_name in skipped_names:
            name, _, lr = skipped_name.partition(" lr=")
            names.setdefault(name, []).extend([plain(float(lr))] if lr else [])
        count = sum(max(1, len(lrs)) for lrs in names.values())
        listed = [f"`{name}`" + (f" at lr {' and '.join(lrs)}" if lrs else "") for name, lrs in names.items()]
        clauses.append(f"{count} row{'s' if count > 1 else ''} ({reason}): {', '.join(listed)}")
    return "\n\nNot run here: " + "; ".join(clauses) + "." if clauses else ""


def _notes(section: SectionResult) -> str:
    return "".join("\n- " + note for note in section.notes)


def _conditioning(section: SectionResult, reference: dict) -> str:
    """Why gradient descent stops where it does: stated only as far as the reference row's result bears it out."""
    config, optimum = section.extra["config"], section.extra["optimum"]
    final = reference["final_mse"]
    far = math.isfinite(final) and final > 2 * optimum["mse"]
    headline = (
        "**The problem is ill-conditioned, so every row stops far from the best fit.** "
        if far and all(r["converged_same"] is not False for r in section.rows)
        else ""
    )
    return f"""{headline}The least-squares optimum of degree
{config["degree"]} has MSE **{optimum["mse"]:.6f}**; gradient descent (`{reference["name"]}`) ends at {final:.6f}
({plain(final / optimum["mse"])}x the optimum) after {config["steps"]:,} steps. The MSE's Hessian (2/N XᵀX of the
power matrix) has condition number {plain(optimum["hessian_condition_number"])}: lr must stay below
{plain(optimum["largest_stable_lr"])} for the stiffest direction, and at lr {plain(config["lr"])} the flattest
direction needs ~{plain(optimum["slowest_mode_steps_at_lr"])} steps."""


def _reference_words(reference: dict) -> str:
    """What the speedups' reference row is: the write-up's NumPy loop only where that row is the reference."""
    if reference["name"] == "numpy":
        return "the write-up's NumPy loop"
    return "this run has no `numpy` row, the write-up's NumPy loop: the speedups are against this row instead"


def _exact_words(reference: dict) -> str:
    """The MSE reference row named for what it is: exact gradient descent only when it is the float64 row."""
    return "exact gradient descent" if reference.get("group") == "reference" else f"the `{reference['name']}` row"


def poly_markdown(section: SectionResult) -> str:
    config = section.extra["config"]
    reference = named_row(section, section.extra["reference_row"])
    autograd = _row(section, AUTOGRAD_ROW)
    rows = [
        [
            f"`{r['name']}`",
            r["group"],
            plain(r["seconds"]),
            plain(r["us_per_step"]),  # 3 significant digits: the fused rows take hundredths of a µs
            speedup(r["speedup"]),
            speedup(ratio(autograd["seconds"], r["seconds"])) if autograd else "–",
            f"{r['final_mse']:.6f}",
            _agreement(r["converged_same"]),
            f"{r['first_call_seconds']:.2f}",
            write_up_says(r),
            load_cell(r),
            r["note"],
        ]
        for r in section.rows
    ]
    table = _table(
        [
            "row",
            "group",
            "seconds",
            "µs/step",
            f"speedup vs {reference['name']}",
            f"speedup vs {AUTOGRAD_ROW}",
            "final MSE",
            "same MSE",
            "first call / compile (s)",
            "write-up says",
            "others' CPU share",
            "note",
        ],
        rows,
    )
    return f"""## {section.title}

x = linspace(0, 5, {config["samples"]}), y = sin x, degree {config["degree"]}, zeros init, {config["steps"]:,} steps
at lr {plain(config["lr"])}, float32, MSE recorded every step; median of {config["repeat"]} timed run(s) after a
warm-up of {config["warmup_steps"]:,} steps. Speedups: against `{reference["name"]}` ({_reference_words(reference)}) and
against `{AUTOGRAD_ROW}` (its autograd loop on the CPU, the one a reader of the write-up runs). "same MSE": final MSE
within {config["mse_rtol"]:.1%} (relative) of the `{mse_reference_row(section)["name"]}` row's (the floor row trains
nothing: not a fit, not counted). "others' CPU share": the share of the CPUs other processes used while the row's
process ran (its set-up, warm-up and timed steps).

{table}{_skipped(section)}

{_conditioning(section, mse_reference_row(section))}
{_notes(section)}

![Does every implementation train the same model as exact gradient descent?](poly_mse_traces.png)
![How close does gradient descent get to the best degree-4 fit?](poly_fit.png)
![How long does one training step take in each implementation?](poly_times.png)
"""


def speed_markdown(section: SectionResult) -> str:
    numpy_rows = {(r["workload"], r["size"]): r for r in section.rows if r["name"] == "numpy"}
    # the unsynchronized clock is read on the GPU only: the column stands where a GPU row ran
    unsynchronized = any(r.get("as_written_unsynchronized_seconds") is not None for r in section.rows)
    rows = []
    for r in section.rows:
        numpy_row = numpy_rows.get((r["workload"], r["size"]))
        rows.append(
            [
                f"{r['workload']} {r['size']}x{r['size']} ×{r['loops']}",
                f"`{r['name']}`",
                plain(r["write_up_seconds"], 4),
                plain(r["as_written_seconds"], 4),
                *([plain(r.get("as_written_unsynchronized_seconds"), 4)] if unsynchronized else []),
                plain(r["op_alone_seconds"], 4),
                plain(r["op_preallocated_seconds"], 4),
                speedup(ratio(numpy_row["op_alone_seconds"], r["op_alone_seconds"])) if numpy_row else "–",
                load_cell(r),
            ]
        )
    table = _table(
        [
            "loop",
            "implementation",
            "write-up (s)",
            "as written, synchronized (s)",
            *(["as written, unsynchronized (s)"] if unsynchronized else []),
            "op alone (s)",
            "op alone, into a preallocated result (s)",
            "op alone: speedup vs numpy",
            "others' CPU share",
        ],
        rows,
    )
    return f"""## {section.title}

Each loop as the write-up wrote it (two randn calls and the operation per iteration) and the operation alone on
pre-generated inputs; the write-up's own %%time beside them (its machine: Colab CPU, Tesla K80). The comparison the
write-up makes is torch against NumPy: the speedup column divides NumPy's time for the operation alone by the row's.

{table}{_skipped(section)}
{_notes(section)}

![How much of each loop the speed write-up timed is the operation itself?](speed.png)
"""


def large_markdown(section: SectionResult) -> str:
    def weights(r):
        if r["diverged_at_epoch"] is not None:
            return f"diverged (non-finite loss at epoch {r['diverged_at_epoch']})"
        return (
            f"{plain(r['weight_error_first'], 4)} → {plain(r['weight_error_last'], 4)} "
            f"(x{plain(r['weight_error_ratio'], 6)}; predicted x{plain(r['predicted_weight_error_ratio'], 6)})"
        )

    rows = [
        [
            f"`{r['name']}`",
            plain(r["lr"]),
            "in kernel" if r["sample_in_kernel"] else f"{r['generation_ms_per_epoch']:.1f}",
            "–" if r["sample_in_kernel"] else f"{r['training_ms_per_epoch']:.1f}",
            f"{r['epoch_ms']:.2f}",
            speedup(r["epoch_speedup_vs_autograd"]),
            speedup(r["training_speedup_vs_autograd"]),
            f"{plain(r['first_loss'])} → {plain(r['last_loss'])}",
            weights(r),
            f"{r['write_up_ms_per_epoch']:.1f}" if r["write_up_ms_per_epoch"] else "",
            load_cell(r),
            r.get("note", ""),
        ]
        for r in section.rows
    ]
    config = section.extra["config"]
    table = _table(
        [
            "row",
            "lr",
            "randn ms/epoch",
            "training ms/epoch",
            "epoch ms (sample included)",
            "epoch speedup vs the write-up's loop",
            "training speedup vs the write-up's loop",
            "loss (one sample) first → last",
            "weights' RMS error |w - 3| first → last",
            "write-up ms/epoch",
            "others' CPU share",
            "note",
        ],
        rows,
    )
    return f"""## {section.title}

N = {config["n"]:,} weights, {config["epochs"]} epochs, a fresh sample per epoch (torch.randn, timed apart as
'randn', or drawn in-kernel). Speedups are against the write-up's loop, the `{AUTOGRAD_ROW}` row at the same lr:
the whole epoch, sample included, and the training step alone. 'write-up ms/epoch': the write-up's own %%time of its
loop (200 epochs of N = 10^7 at lr 0.001; Colab CPU, Tesla K80), shown in the row it measured when this run has its N
and epochs.

{table}{_skipped(section)}
{_notes(section)}

![How long does one epoch take, and how much of it is drawing the sample?](large.png)
![Does the {size_words(config["n"])}-weight model train at either learning rate?](large_loss.png)
"""


def batched_markdown(section: SectionResult) -> str:
    config = section.extra["config"]
    rows = [
        [
            f"`{r['name']}`",
            f"{r['seconds']:.3f}",
            f"{r['ns_per_series_step']:.2f}",
            speedup(r["speedup"]),
            f"{r['mean_final_mse']:.6f}",
            _agreement(r["converged_same"]),
            load_cell(r),
        ]
        for r in section.rows
    ]
    table = _table(
        [
            "row",
            "seconds",
            "ns per series x step",
            f"speedup vs {section.extra['reference_row']}",
            "mean final MSE",
            "same MSE",
            "others' CPU",
        ],
        rows,
    )
    return f"""## {section.title}

B = {config["series"]} series sharing x, N = {config["samples"]}, degree {config["degree"]}, {config["steps"]} steps at
lr {plain(config["lr"])}, float32, every loss recorded; each row the median of the runs made in half a second (at
most 5), each run's output freed before the next (its memory reused, as in a loop of fits: a fresh 8 MB trace costs
~1 ms of page faults, 0.5 ns per series x step). The speedups are against `{section.extra["reference_row"]}`, the
write-up's NumPy step batched over the series with one matmul.

{table}{_skipped(section)}
{_notes(section)}
"""


def gram_markdown(section: SectionResult) -> str:
    config = section.extra["config"]
    many = [r for r in section.rows if r["kind"] == "many"]
    many_table = _table(
        ["workload", "seconds", "fit / poly_mse calls", "others' CPU"],
        [[f"`{r['name']}`", plain(r["seconds"], 4), plain(r.get("vs_poly_mse_calls")), load_cell(r)] for r in many],
    )
    boundary_rows = []
    for r in (r for r in section.rows if r["kind"] == "boundary"):
        for result in r["results"]:
            boundary_rows.append(
                [
                    r["name"],
                    plain(r["condition"], 2) if r["condition"] is not None else "> 10^15",
                    plain(r["lr"], 2),
                    f"{result['steps']:,}",
                    plain(result["bound"], 2),
                    f"{result['auto']} / {result['auto_float32']}",
                    plain(result["gram_error"], 2),
                    plain(result["data_error"], 2),
                ]
            )
    boundary_table = _table(
        [
            "x, degree",
            "cond(A)",
            "lr",
            "steps T",
            "gram error bound",
            "auto picks (float64 / float32 data)",
            "gram error",
            "data pass error",
        ],
        boundary_rows,
    )
    sharded = section.extra["sharded"]
    sharded_table = _table(
        ["route", "seconds (slower rank)", "collectives issued (rank 0)", "last loss", "coeffs vs one process"],
        [
            [
                f"`{r['name']}`",
                plain(r["seconds"]),
                ", ".join(f"{count} {name.removeprefix('gloo:')}" for name, count in sorted(r["collectives"].items())),
                plain(r["last_loss"], 6),
                plain(r.get("coeffs_vs_one_process"), 2),
            ]
            for r in sharded["rows"]
        ],
    )
    return f"""## {section.title}

`fit_poly(method="gram")` makes one float64 pass for A = VᵀV/N, b = Vᵀy/N, s = yᵀy/N (`poly_moments`) and then steps
on them, (D+1)² work per step whatever N is (`fit_poly_moments`); the seed fit's rows are in the first section.

**Many points**: N = {config["points"]:,} points of sin(3x) on [-1, 1], float32, degree 4; the whole gram fit
of {config["steps"]:,} steps at lr {plain(gram.MANY_POINTS_LR)} (its pass over the data included) against
{config["steps"] // 1000} calls of `poly_mse` on the same data (one data-pass step each); median of {config["repeat"]}.

{many_table}

**The accuracy boundary**: {BOUNDARY_POINTS_TEXT}, lr = 0.45 / λmax(A) (the lr column; 1 / λmax(A) is the largest
stable one), from zeros, float64. Errors: relative (2-norm) distance of the coefficients after T steps from exact
gradient descent (its closed form in 80-digit arithmetic). The statistics are rounded once and their error acts at
every step, so it grows with the steps (bound ≈ eps T at a stable lr once cond(A) > T), where the data pass's grows
with their square root; `auto` keeps the statistics while the bound is at most {pykernels_tolerance_text()}.

{boundary_table}

**Sharded data**: {config["sharded_points"]:,} points of sin(3x) on [0, 1], float64, degree 4, every other point
on each of 2 gloo processes (one thread each), {config["sharded_steps"]:,} steps at lr 0.5 by each route (DDP
all-reduces the gradient at every step, and `train_ddp` the loss it reports; `fit_poly_distributed` gathers each
rank's layout, 4 integers, then all-reduces the statistics once). One process's gram fit of all the points ends at
loss {plain(sharded["one_process_last_loss"], 6)}.

{sharded_table}
{_notes(section)}
"""


BOUNDARY_POINTS_TEXT = "200 points of y = sin(3 (x - a) / (b - a)) on each [a, b]"


def pykernels_tolerance_text() -> str:
    from pykernels.ops import GRAM_TOLERANCE

    return (
        f"{plain(GRAM_TOLERANCE[torch.float64], 2)} for float64 data and {plain(GRAM_TOLERANCE[torch.float32], 2)} "
        "(float32's rounding) for float32 data"
    )


def limits_markdown(section: SectionResult) -> str:
    rates = section.extra["rates"]
    machine = _table(
        ["rate", "this machine", "measured as"],
        [
            [
                "float64 multiply-adds",
                f"{plain(rates['fma_float64'] / 1e9)} billion/s ({plain(rates['fma_float64_one_thread'] / 1e9)} on "
                "one thread)",
                "`torch.mm`, float64",
            ],
            [
                "float32 multiply-adds",
                f"{plain(rates['fma_float32'] / 1e9)} billion/s ({plain(rates['fma_float32_one_thread'] / 1e9)} on "
                "one thread)",
                "`torch.mm`, float32",
            ],
            ["a read pass (2 arrays)", f"{plain(rates['dot_bytes'] / 1e9)} GB/s", "`torch.dot(w, x)`"],
            ["an update pass (2 read, 1 written)", f"{plain(rates['update_bytes'] / 1e9)} GB/s", "`w.add_(x)`"],
            ["a write pass", f"{plain(rates['write_bytes'] / 1e9)} GB/s", "`w.fill_(1)`"],
            ["Philox normals", f"{plain(rates['philox_normals'] / 1e9)} billion/s", "`philox_normal_`, in L2"],
        ],
    )
    rows = _table(
        ["row", "bound", "work", "limit", "measured", "fraction of the limit", "others' CPU"],
        [
            [
                f"`{r['name']}`",
                limits.BOUND_WORDS[r["bound"]],
                r["work"],
                _seconds(r["limit_seconds"]),
                _seconds(r["seconds"]),
                plain(r["fraction"], 2),
                load_cell(r),
            ]
            for r in section.rows
        ],
    )
    config = section.extra["config"]
    return f"""## {section.title}

What the machine can do, measured in this run ({plain(rates["threads"])} threads; the passes over float32 arrays of
{plain(config["stream_elements"])} elements, the large problem's n):

{machine}

Each fused row against the rate that bounds it: the arithmetic (multiply-adds) the stepwise recurrence needs, or
the memory passes (and the samples) an exact SGD epoch needs, at the rates above; the time of the whole run (per
epoch for the large problem). A fraction of 1 is the machine's limit; a row on one thread (a single fit's chain, the
numba loop) can reach at most the one-thread rate's share. A method that does less work than the recurrence (the
statistics' 16-step jumps share products across steps) could pass 1. "Others' CPU": the load while the row's own
time was measured.

{rows}
{_notes(section)}
"""


MARKDOWN = {
    "poly": poly_markdown,
    "speed": speed_markdown,
    "large": large_markdown,
    "batched": batched_markdown,
    "gram": gram_markdown,
    "limits": limits_markdown,
}
# each section's title and notes, written again from its rows: a saved run's report gets today's words
DESCRIBE = {
    "poly": polyfit.describe,
    "speed": speed.describe,
    "large": large.describe,
    "batched": batched.describe,
    "gram": gram.describe,
    "limits": limits.describe,
}


def _jsonable(value: Any) -> Any:
    """``value`` as standard JSON: arrays as lists, and inf and NaN (anywhere, arrays included) as the strings
    "inf", "-inf", "nan", which :func:`_from_jsonable` turns back (JSON has no literal for them)."""
    if isinstance(value, np.ndarray | np.generic):
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _from_jsonable(value: Any) -> Any:
    """:func:`_jsonable` undone: the strings it wrote for inf and NaN become floats again."""
    if isinstance(value, dict):
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


MAX_TRACE_POINTS = 2000


def decimate_traces(sections_json: dict) -> dict:
    """results.json keeps at most MAX_TRACE_POINTS points of each MSE trace (every k-th step, k recorded as
    ``trace_every``); the plots use the full traces."""
    for row in sections_json.get("poly", {}).get("rows", []):
        trace = row.get("trace")
        if trace is not None and len(trace) > MAX_TRACE_POINTS:
            every = -(-len(trace) // MAX_TRACE_POINTS)
            row["trace"], row["trace_every"] = trace[::every], every
    return sections_json


POLY_WRITE_UP = (
    'Chuck Anderson, ["Comparing Numpy, Pytorch, and autograd on CPU and GPU"]'
    "(http://nbviewer.ipython.org/url/www.cs.colostate.edu/~anderson/wp/notebooks/"
    "Fitting%20Polynomial%20to%20Data%20in%20Pytorch%20with%20autograd.ipynb) (Pattern Exploration blog; notebook "
    '"Fitting Polynomial to Data in Pytorch with autograd"): a degree-4 polynomial fitted to sin(x) on 100 points by '
    "200,000 steps of gradient descent at lr 0.00001; its one figure is that autograd makes the loop about "
    f"{WRITE_UP_AUTOGRAD_OVER_TORCH:.0f}x slower, and it asks how to make autograd faster."
)
SPEED_WRITE_UP = (
    '"Pytorch Basics and Speed Comparisons with Numpy and GPU" (a blog post of 2020-01-04; its text gives no address): '
    "matmul and add timed in NumPy, torch and on a GPU, and a 10-million-weight linear model trained through torch.dot."
)
AUTOGRAD_ROW = "torch-autograd"  # the write-ups' autograd loop on the CPU: what a reader of either one runs


def _row(section: SectionResult | None, name: str, **match: Any) -> dict | None:
    """The section's row of that name (and those field values), or None where it did not run."""
    rows = section.rows if section else []
    return next((r for r in rows if r["name"] == name and all(r.get(k) == v for k, v in match.items())), None)


def _seconds(value: float) -> str:
    """A time for the answer; one that was not measured (NaN, inf) is said so, never "nan s"."""
    return f"{plain(value)} s" if math.isfinite(value) else "an unmeasured time"


def _fit_row(section: SectionResult, name: str) -> dict | None:
    """The row of that name where it fit (same MSE as the reference) and has a measured time: a row that did not
    fit is no faster way to the same result, so the answer quotes no speedup of it."""
    row = _row(section, name)
    if row is None or row.get("converged_same") is False:
        return None
    return row if math.isfinite(row["seconds"]) and row["seconds"] > 0 else None


def _poly_answer(section: SectionResult) -> list[str]:
    """The polynomial write-up's questions (autograd's cost, how to make it faster), answered from the rows."""
    steps = section.extra["config"]["steps"]
    numpy_row, torch_row = _fit_row(section, "numpy"), _fit_row(section, "torch")
    autograd = _fit_row(section, AUTOGRAD_ROW)
    lines = [f'**The polynomial write-up** ({steps:,} steps; its rows: the report\'s "Polynomial fit" table):', ""]
    if autograd and torch_row:
        lines.append(
            f"- **Autograd's cost.** The write-up: autograd makes the loop about "
            f"{WRITE_UP_AUTOGRAD_OVER_TORCH:.0f}x slower. Here `{AUTOGRAD_ROW}` takes {_seconds(autograd['seconds'])}, "
            f"{speedup(ratio(autograd['seconds'], torch_row['seconds']))} the manual-gradient `torch` row's "
            f"{_seconds(torch_row['seconds'])}."
        )
    if autograd:
        faster = [
            (name, what)
            for name, what in (
                ("poly_mse+backward (cpp)", "pykernels' op under autograd"),
                ("manual poly_mse step (cpp)", "pykernels' op in a manual step, no autograd"),
                ("torch", "the write-up's own manual-gradient torch code"),
            )
            if _fit_row(section, name)
        ]
        parts = [
            f"{what} (`{name}`) {speedup(ratio(autograd['seconds'], _fit_row(section, name)['seconds']))} "
            f"({_seconds(_fit_row(section, name)['seconds'])})"
            for name, what in faster
        ]
        if parts:
            lines.append(f"- **The same loop, faster**, against `{AUTOGRAD_ROW}`: {'; '.join(parts)}.")
    fused = [
        r
        for r in (
            _fit_row(section, "fit_poly, fused loop (cpp)"),
            _fit_row(section, "fit_poly (gram), fused loop (cpp)"),
        )
    ]
    if autograd and numpy_row and all(fused):
        on_data, on_statistics = fused
        lines.append(
            f"- **The whole fit in one call.** `{on_data['name']}` runs the {steps:,} steps on the data in "
            f"{_seconds(on_data['seconds'])}: "
            f"{speedup(ratio(autograd['seconds'], on_data['seconds']))} `{AUTOGRAD_ROW}`, "
            f"{speedup(ratio(numpy_row['seconds'], on_data['seconds']))} `numpy`. On the sufficient statistics, "
            f"`{on_statistics['name']}` takes {_seconds(on_statistics['seconds'])} (their pass included): "
            f"{speedup(ratio(autograd['seconds'], on_statistics['seconds']))} and "
            f"{speedup(ratio(numpy_row['seconds'], on_statistics['seconds']))}."
        )
    fits = [r for r in section.rows if r["converged_same"] is not None]
    flagged = [f"`{r['name']}`" for r in fits if not r["converged_same"]]
    reference, optimum = mse_reference_row(section), section.extra["optimum"]["mse"]
    agreement = (
        f"**{len(flagged)} of {len(fits)} fits did not reach the same MSE: {', '.join(flagged)}**"
        if flagged
        else f"All {len(fits)} fits end at the same MSE"
    )
    lines.append(
        f"- **Same result.** {agreement} ({_exact_words(reference)}: {reference['final_mse']:.6f}), "
        f"{plain(reference['final_mse'] / optimum)}x the best degree-{section.extra['config']['degree']} fit's "
        f"{optimum:.6f}: the problem is ill-conditioned, and {steps:,} steps of gradient descent stop far from it."
        + (" No speedup is quoted above for a fit that did not reach the same MSE." if flagged else "")
    )
    return lines


def _training_sentence(rows: list[dict], lr_words: str, model: WeightErrorModel) -> str:
    """Whether the rows at one learning rate train, from the weights' RMS error (large.outcome, which the plot uses
    too): "At lr X, no: 6 of 6 rows' loss overflows (by epoch 27)."."""
    grouped = large.outcomes(rows)
    verdict = "yes" if list(grouped) == [large.TRAINING] else "partly" if large.TRAINING in grouped else "no"
    parts = []
    for kind, members in grouped.items():
        ratios = [r["weight_error_ratio"] for r in members]
        digits = 6 if kind == large.NOT_LEARNING else 3  # a ratio near 1 needs its digits to differ from 1
        low, high = plain(min(ratios), digits), plain(max(ratios), digits)
        spread = f"x{low}" + (f" to x{high}" if high != low else "")
        count = f"{len(members)} of {len(rows)} rows"
        if kind == large.OVERFLOWED:
            epochs = [r["diverged_at_epoch"] for r in members if r["diverged_at_epoch"] is not None]
            parts.append(f"{count}' loss overflows" + (f" (by epoch {max(epochs)})" if epochs else ""))
        elif kind == large.DIVERGING:
            parts.append(f"in {count} the weights' RMS error grows ({spread} of its start, no overflow yet)")
        elif kind == large.NOT_LEARNING:
            needed = model.epochs_to_shrink(0.01)
            parts.append(
                f"{count} are stable but barely move (the weights' RMS error ends at {spread} of its start"
                + (
                    f"; bringing it to 1% would take ~{plain(needed)} epochs of one fresh sample each)"
                    if math.isfinite(needed) and needed > 0
                    else ")"
                )
            )
        else:
            parts.append(f"{count} train (the weights' RMS error ends at {spread} of its start)")
    return f"At {lr_words}, {verdict}: {'; '.join(parts)}."


def _speed_answer(speed_section: SectionResult | None, large_section: SectionResult | None) -> list[str]:
    """The speed write-up's comparisons: its large problem's epoch, whether it trains, and its loops' randn share."""
    tables = [
        f'"{title}"'
        for section, title in ((speed_section, "Speed comparisons"), (large_section, "Large problem"))
        if section and section.rows
    ]
    if not tables:
        return []
    pointer = " and ".join(tables) + (" tables" if len(tables) > 1 else " table")
    lines = [f"**The speed write-up** (its rows: the report's {pointer}):", ""]
    if large_section and large_section.rows:
        config = large_section.extra["config"]
        seed_lr, stable_lr, n, epochs = config["seed_lr"], config["stable_lr"], config["n"], config["epochs"]
        autograd = _row(large_section, AUTOGRAD_ROW, lr=seed_lr)
        in_kernel = [
            r
            for r in large_section.rows
            if r["sample_in_kernel"] and r["lr"] == seed_lr and math.isfinite(r["epoch_ms"]) and r["epoch_ms"] > 0
        ]
        fastest = min(in_kernel, key=lambda r: r["epoch_ms"], default=None)
        if autograd and fastest and math.isfinite(autograd["epoch_ms"]):  # an epoch not measured is not quoted
            write_up = autograd["write_up_ms_per_epoch"]
            lines.append(
                f"- **The large problem's epoch** ({size_words(n)} weights): the write-up's loop (`{AUTOGRAD_ROW}`, lr "
                f"{plain(seed_lr)}) takes {autograd['epoch_ms']:.2f} ms here"
                + (f" (the write-up's own machine: {write_up:.1f} ms)" if write_up else "")
                + f"; `{fastest['name']}` {fastest['epoch_ms']:.2f} ms, sample included: "
                f"{speedup(ratio(autograd['epoch_ms'], fastest['epoch_ms']))}."
            )
        sentence = "- **Does it train?** " + " ".join(
            _training_sentence([r for r in large_section.rows if r["lr"] == lr], words, WeightErrorModel(lr, n, epochs))
            for lr, words in (
                (seed_lr, f"the write-up's lr {plain(seed_lr)}"),
                (stable_lr, f"the stable lr {plain(stable_lr)} (0.5/N)"),
            )
            if any(r["lr"] == lr for r in large_section.rows)
        )
        lines.append(sentence)
    shares = []
    for r in speed_section.rows if speed_section else []:
        if r["device"] == "cpu" and r["as_written_seconds"] > r["op_alone_seconds"]:
            shares.append(1 - r["op_alone_seconds"] / r["as_written_seconds"])
    if shares:
        lines.append(
            f"- **Matmul and add.** The write-up's loops time mostly randn: {min(shares):.0%} to {max(shares):.0%} "
            "of each loop here is the two randn calls, not the operation (this report's table also times the operation "
            "alone)."
        )
    return lines if len(lines) > 2 else []


def _gpu_answer(sections: dict[str, SectionResult], machine: dict) -> str:
    """What ran on a GPU, or that none did (and how many rows that left out); the speed write-up's GPU add only
    where its section ran."""
    gpu_skipped = sum(1 for s in sections.values() for skipped in s.skipped if skipped.reason == "no CUDA GPU")
    gpu_rows = [r for s in sections.values() for r in s.rows if r.get("device") == "cuda"]
    if not machine["gpu"]:
        text = "**GPU**: none on this machine" + (
            f", so its {gpu_skipped} GPU rows did not run." if gpu_skipped else "."
        )
        if sections.get("speed") and sections["speed"].rows:
            text += (
                " The speed write-up's GPU add (6.16 ms) read the clock before the GPU had finished: it timed the "
                "kernel launches."
            )
        return text
    if not gpu_rows:
        return f"**GPU** ({machine['gpu']}): present, but no GPU row ran in this run (every row above is the CPU's)."
    poly = sections.get("poly")
    autograd, autograd_gpu = _fit_row(poly, AUTOGRAD_ROW), _fit_row(poly, AUTOGRAD_ROW + "-gpu")
    poly_gpu = [r for r in (poly.rows if poly else []) if r.get("device") == "cuda" and r["converged_same"]]
    fastest = min(poly_gpu, key=lambda r: r["seconds"], default=None)
    parts = [f"**GPU** ({machine['gpu']})"]
    if autograd and autograd_gpu:
        parts.append(
            f"the write-up's autograd loop, `{autograd_gpu['name']}`, takes {_seconds(autograd_gpu['seconds'])} "
            f"({speedup(ratio(autograd['seconds'], autograd_gpu['seconds']))} `{AUTOGRAD_ROW}` on the CPU)"
        )
    if fastest:
        parts.append(f"the fastest GPU fit, `{fastest['name']}`, {_seconds(fastest['seconds'])}")
    which = sorted(
        {title for key, s in sections.items() for title in [s.title] if any(r.get("device") == "cuda" for r in s.rows)}
    )
    return (
        ": ".join(parts[:1])
        + (": " + "; ".join(parts[1:]) if len(parts) > 1 else f": {len(gpu_rows)} GPU rows ran, in {'; '.join(which)}")
        + "."
    )


def answer(sections: dict[str, SectionResult], machine: dict) -> str:
    """The report's first screen: what the two write-ups asked, answered in plain numbers from the rows below."""
    blocks = []
    if sections.get("poly") and sections["poly"].rows:
        blocks.append(_poly_answer(sections["poly"]))
    blocks.append(_speed_answer(sections.get("speed"), sections.get("large")))
    if not any(sections.get(key) and sections[key].rows for key in ("poly", "speed", "large")):
        blocks.append(
            [
                "This run has none of the write-ups' own sections (polynomial fit, speed comparisons, large problem), "
                "so neither write-up's question is answered here."
            ]
        )
    blocks.append([_gpu_answer(sections, machine)])
    return "\n\n".join("\n".join(block) for block in blocks if block)


def _settings(settings: dict) -> str:
    """The run's settings as a sentence."""
    kind = "a --quick smoke run (small sizes: not a measurement)" if settings["quick"] else "a full run"
    return (
        f"Settings: {kind}; devices asked for: {', '.join(settings['devices'])}; {settings['repeat']} timed "
        f"repeat(s) per row; polynomial fit {settings['poly_steps']:,} steps; large problem N = "
        f"{settings['large_n']:,}, {settings['large_epochs']} epochs."
    )


def _method(machine: dict, command: str, settings: dict) -> str:
    """The last section: how the numbers were measured, on what."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    return f"""## How this was measured

Command: `{command}`

Machine: {machine["cpu"]}, {machine["logical_cpus"]} logical CPUs, torch threads {machine["torch_threads"]},
GPU: {machine["gpu"] or "none"}. Versions: {versions}; Python {machine["python"]}.
THP_MEM_ALLOC_ENABLE={machine["THP_MEM_ALLOC_ENABLE"] or "unset"} (huge pages for torch's CPU allocations).
Load average (1, 5, 15 min) at the start: {_loads(machine.get("load_average_start"))}; at the end:
{_loads(machine.get("load_average_end"))}. Each row records the share of the CPUs other processes used while it ran;
rows where others used more than {BUSY_CPUS:g} CPUs on average are marked busy.

{_settings(settings)}

Timing: time.perf_counter around the training steps only (progress bars move between timed blocks), after a
warm-up; CUDA is synchronized before every clock read. Compare rows within this report, not across machines.
"""


def write(out: Path, sections: dict[str, SectionResult], machine: dict, command: str, settings: dict) -> Path:
    """results.json first (the measurements are the one thing a rerun cannot give back cheaply), then report.md,
    then the plots; a plot that cannot be drawn is named in report.md, which is then written again."""
    out.mkdir(parents=True, exist_ok=True)
    for key, section in sections.items():
        DESCRIBE[key](section)
    payload = {
        "format": RESULTS_FORMAT,
        "command": command,
        "machine": machine,
        "settings": settings,
        "sections": decimate_traces({k: s.to_json() for k, s in sections.items()}),
    }
    # allow_nan=False: NaN and Infinity are not JSON; _jsonable writes them as strings that read_results turns back
    (out / "results.json").write_text(json.dumps(_jsonable(payload), indent=1, allow_nan=False))
    (out / "report.md").write_text(_report(sections, machine, command, settings, {}))
    problems = {key: plots.draw_section(key, section, out) for key, section in sections.items() if section.rows}
    if any(problems.values()):
        (out / "report.md").write_text(_report(sections, machine, command, settings, problems))
    return out / "report.md"


def _report(
    sections: dict[str, SectionResult], machine: dict, command: str, settings: dict, problems: dict[str, list[str]]
) -> str:
    """report.md's text; ``problems``: per section, the lines of the plots that could not be drawn."""
    body = "\n\n".join(
        (MARKDOWN[key](section) if section.rows else f"## {section.title}\n\nNo row ran here.{_skipped(section)}\n")
        + "".join(f"\n**{line}**\n" for line in problems.get(key, []))
        for key, section in sections.items()
    )
    return f"""# pykernels study: two write-ups' timings, reproduced, with pykernels beside them

Two write-ups timed NumPy, torch and autograd on small training loops; this study runs their loops on one machine
({machine["logical_cpus"]} logical CPUs, GPU: {machine["gpu"] or "none"}) with pykernels' rows beside them:

1. **The polynomial write-up**: {POLY_WRITE_UP}
2. **The speed write-up**: {SPEED_WRITE_UP}

## The answer

{answer(sections, machine)}

{_closing(sections)}

{body}
{_method(machine, command, settings)}"""


def _closing(sections: dict[str, SectionResult]) -> str:
    """The answer's last line: where its numbers come from (only when some section has rows)."""
    if not any(section.rows for section in sections.values()):
        return "No section's rows ran, so there is nothing to answer from; what was asked is in the last section."
    return "Every number above comes from the tables and notes below; how they were measured is in the last section."


RESULTS_FORMAT = 1  # results.json's layout version: read_results refuses files of another (or of none)


@dataclass
class SavedRun:
    """What a results.json holds: enough to write its report and plots again."""

    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    sections: dict[str, SectionResult]


class ResultsError(ValueError):
    """A results.json that cannot be read back: its message is one line naming what is wrong."""


REQUIRED_KEYS = {
    "machine": ("cpu", "logical_cpus", "torch_threads", "gpu", "versions", "python", "THP_MEM_ALLOC_ENABLE"),
    "settings": ("quick", "devices", "repeat", "poly_steps", "large_n", "large_epochs"),
}
SECTION_KEYS = ("title", "rows", "skipped", "notes", "extra")
EXTRA_KEYS = {
    "poly": ("config", "optimum", "reference_row"),
    "speed": (),
    "large": ("config",),
    "batched": ("config", "reference_row"),
    "gram": ("config", "sharded"),
    "limits": ("config", "rates"),
}


def _missing(mapping: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(mapping, dict):
        raise ResultsError(f"{where} is not a JSON object")
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise ResultsError(f"{where} lacks {', '.join(repr(k) for k in missing)}")


def validate(payload: Any) -> None:
    """Raise :class:`ResultsError` naming the first thing a results.json lacks (or has that this code does not
    know) for its report to be written again; the rows' own fields are checked by writing the report."""
    if not isinstance(payload, dict):
        raise ResultsError("expected a JSON object")
    if "format" not in payload:
        raise ResultsError(
            'no "format" field: written by an older pykernels-study (before the format field) or not a study\'s '
            "results.json; re-run the study"
        )
    if payload["format"] != RESULTS_FORMAT:
        raise ResultsError(f"format {payload['format']!r}, but this pykernels-study reads format {RESULTS_FORMAT}")
    _missing(payload, ("command", "machine", "settings", "sections"), "the file")
    for part, keys in REQUIRED_KEYS.items():
        _missing(payload[part], keys, f'"{part}"')
    if not isinstance(payload["sections"], dict):
        raise ResultsError('"sections" is not a JSON object')
    unknown = [key for key in payload["sections"] if key not in MARKDOWN]
    if unknown:
        raise ResultsError(f"unknown section(s) {', '.join(map(repr, unknown))}; known: {', '.join(MARKDOWN)}")
    for key, section in payload["sections"].items():
        _missing(section, SECTION_KEYS, f'section "{key}"')
        if section["rows"]:
            _missing(section["extra"], EXTRA_KEYS[key], f'section "{key}"\'s "extra"')
        for part in ("rows", "skipped", "notes"):
            if not isinstance(section[part], list):
                raise ResultsError(f'section "{key}"\'s "{part}" is not a list')
        for skipped in section["skipped"]:
            _missing(skipped, ("name", "reason"), f'a skipped row of section "{key}"')


def read_results(path: Path) -> SavedRun:
    """The run a results.json (written by :func:`write`) records, its sections rebuilt as :class:`SectionResult`;
    :class:`ResultsError` (one line) when the file does not have the layout :func:`write` gives it."""
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ResultsError(f"not JSON: {error}") from None
    validate(raw)
    payload = _from_jsonable(raw)
    sections = {
        key: SectionResult(
            title=section["title"],
            rows=section["rows"],
            skipped=[Skipped(**skipped) for skipped in section["skipped"]],
            notes=section["notes"],
            extra=section["extra"],
        )
        for key, section in payload["sections"].items()
    }
    return SavedRun(payload["command"], payload["machine"], payload["settings"], sections)
