"""The study's outputs: report.md (tables, machine, command), results.json and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch

from ._common import BUSY_CPUS, SectionResult, load_cell
from .polyfit import write_up_says


def _times(value: float | None, spec: str) -> str:
    """A speedup: '12.3x', or a dash where there is none."""
    return "–" if value is None else _fmt(value, spec) + "x"


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def _loads(loads: tuple[float, ...] | None) -> str:
    return "–" if loads is None else ", ".join(f"{v:.2f}" for v in loads)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _agreement(converged_same: bool | None) -> str:
    """The "same MSE" cell: a row that does not fit (the floor) agrees with nothing."""
    return "not a fit" if converged_same is None else "yes" if converged_same else "**NO**"


def _skipped(section: SectionResult) -> str:
    if not section.skipped:
        return ""
    return "\n\nSkipped here: " + "; ".join(f"`{s.name}` ({s.reason})" for s in section.skipped) + "."


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
{config["degree"]} has MSE **{optimum["mse"]:.6f}**; gradient descent ({reference["name"]}) ends at {final:.6f}
({final / optimum["mse"]:.3g}x the optimum) after {config["steps"]:,} steps. The MSE's Hessian (2/N XᵀX of the power
matrix) has condition number {optimum["hessian_condition_number"]:.3g}: lr must stay below
{optimum["largest_stable_lr"]:.3g} for the stiffest direction, and at lr {config["lr"]:g} the flattest direction needs
~{optimum["slowest_mode_steps_at_lr"]:.3g} steps."""


def _mse_reference(section: SectionResult) -> dict:
    """The row every fit's final MSE is compared with: exact (float64) gradient descent where it ran."""
    name = section.extra.get("mse_reference_row", section.extra["reference_row"])
    return next(r for r in section.rows if r["name"] == name)


def poly_markdown(section: SectionResult) -> str:
    config = section.extra["config"]
    reference = next(r for r in section.rows if r["name"] == section.extra["reference_row"])
    rows = [
        [
            f"`{r['name']}`",
            r["group"],
            _fmt(r["seconds"], ".3g"),
            _fmt(r["us_per_step"], ".3g"),  # 3 significant digits: the fused rows take hundredths of a µs
            _fmt(r["speedup"], ".3g") + "x",
            _fmt(r["final_mse"], ".6f"),
            _agreement(r["converged_same"]),
            _fmt(r["first_call_seconds"], ".2f"),
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
            f"speedup vs {section.extra['reference_row']}",
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
at lr {config["lr"]:g}, float32, MSE recorded every step; median of {config["repeat"]} timed run(s) after a
warm-up of {config["warmup_steps"]:,} steps. "same MSE": final MSE within {config["mse_rtol"]:.0e} (relative) of the
{section.extra.get("mse_reference_row", reference["name"])} row's (the floor row trains nothing: not a fit, not
counted). "others' CPU share": the share of the
CPUs other processes used while the row's process ran (its set-up, warm-up and timed steps).

{table}{_skipped(section)}

{_conditioning(section, _mse_reference(section))}
{"".join(chr(10) + "- " + note for note in section.notes)}

![MSE traces](poly_mse_traces.png)
![fit](poly_fit.png)
![time per step](poly_times.png)
"""


def speed_markdown(section: SectionResult) -> str:
    rows = [
        [
            f"{r['workload']} {r['size']}x{r['size']} ×{r['loops']}",
            f"`{r['name']}`",
            _fmt(r["write_up_seconds"], ".4g"),
            _fmt(r["as_written_seconds"], ".4g"),
            _fmt(r.get("as_written_unsynchronized_seconds"), ".4g"),
            _fmt(r["op_alone_seconds"], ".4g"),
            _fmt(r["op_preallocated_seconds"], ".4g"),
            load_cell(r),
        ]
        for r in section.rows
    ]
    table = _table(
        [
            "loop",
            "implementation",
            "write-up (s)",
            "as written, synchronized (s)",
            "as written, unsynchronized (s)",
            "op alone (s)",
            "op alone, into a preallocated result (s)",
            "others' CPU share",
        ],
        rows,
    )
    notes = "".join("\n- " + n for n in section.notes)
    return f"## {section.title}\n\n{table}{_skipped(section)}\n{notes}\n\n![speed comparisons](speed.png)\n"


def large_markdown(section: SectionResult) -> str:
    def weights(r):
        if r["diverged_at_epoch"] is not None:
            return f"diverged (non-finite loss at epoch {r['diverged_at_epoch']})"
        return (
            f"{r['weight_error_first']:.4g} → {r['weight_error_last']:.4g} (x{r['weight_error_ratio']:.6g}; "
            f"predicted x{r['predicted_weight_error_ratio']:.6g})"
        )

    rows = [
        [
            f"`{r['name']}`",
            _fmt(r["lr"], ".3g"),
            "in kernel" if r["sample_in_kernel"] else _fmt(r["generation_ms_per_epoch"], ".1f"),
            "-" if r["sample_in_kernel"] else _fmt(r["training_ms_per_epoch"], ".1f"),
            _fmt(r["epoch_ms"], ".2f"),
            _times(r["epoch_speedup_vs_autograd"], ".1f"),
            _times(r["training_speedup_vs_autograd"], ".2f"),
            f"{r['first_loss']:.3g} → {r['last_loss']:.3g}",
            weights(r),
            _fmt(r["write_up_ms_per_epoch"], ".1f") if r["write_up_ms_per_epoch"] else "",
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
            "epoch speedup",
            "training speedup",
            "loss first → last",
            "weights' RMS error |w - 3| first → last",
            "write-up ms/epoch",
            "others' CPU share",
            "note",
        ],
        rows,
    )
    notes = "".join("\n- " + n for n in section.notes)
    return (
        f"## {section.title}\n\nN = {config['n']:,} weights, {config['epochs']} epochs, a fresh sample per "
        "epoch (torch.randn, timed apart as 'randn', or drawn in-kernel). Speedups are against the torch-autograd "
        "row at the same lr: the whole epoch, sample included, and the training step alone. 'write-up ms/epoch': "
        "the write-up's own %%time of its loop (200 epochs of N = 10^7 at lr 1e-3; Colab CPU, Tesla K80), shown in "
        f"the row it measured when this run has its N and epochs.\n\n{table}"
        f"{_skipped(section)}\n{notes}\n\n![large problem](large.png)\n"
    )


def batched_markdown(section: SectionResult) -> str:
    config = section.extra["config"]
    rows = [
        [
            f"`{r['name']}`",
            _fmt(r["seconds"], ".3f"),
            _fmt(r["ns_per_series_step"], ".2f"),
            _fmt(r["speedup"], ".1f") + "x",
            _fmt(r["mean_final_mse"], ".6f"),
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
    notes = "".join("\n- " + n for n in section.notes)
    return (
        f"## {section.title}\n\nB = {config['series']} series sharing x, N = {config['samples']}, degree "
        f"{config['degree']}, {config['steps']} steps at lr {config['lr']:g}, float32, every loss recorded; each row "
        "the median of the runs made in half a second (at most 5), each run's output freed before the next (its "
        "memory reused, as in a loop of fits: a fresh 8 MB trace costs ~1 ms of page faults, 0.5 ns per series x "
        "step)."
        f"\n\n{table}{_skipped(section)}\n{notes}\n"
    )


MAX_PLOT_POINTS = 4000  # per line: 200,000-step traces drawn at every k-th step


def _plotted(trace: list | np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a trace thinned to at most MAX_PLOT_POINTS points (the last step always kept)."""
    values = np.asarray(trace, dtype=float)
    stride = max(1, len(values) // MAX_PLOT_POINTS)
    index = np.unique(np.append(np.arange(0, len(values), stride), len(values) - 1))
    return index * every + 1, values[index]


def plot_poly(section: SectionResult, out: Path) -> None:
    optimum = section.extra["optimum"]
    fits = [r for r in section.rows if r["group"] != "floor"]  # the floor trains nothing
    if not fits:
        return
    reference = _mse_reference(section)
    reference_trace = np.asarray(reference["trace"], dtype=float)
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), sharex=True, height_ratios=(1, 1.2))
    steps, values = _plotted(reference_trace, reference.get("trace_every", 1))
    label = "exact gradient descent (float64)" if reference["group"] == "reference" else reference["name"]
    top.plot(steps, values, color="k", lw=2, label=f"{label} (every row's trace, to the width of the line)")
    top.axhline(optimum["mse"], color="k", ls="--", lw=1, label=f"least-squares optimum ({optimum['mse']:.2g})")
    top.set(yscale="log", ylabel="MSE", title="Polynomial fit: MSE per step")
    top.legend(fontsize=8, loc="center left")
    largest = 0.0
    for k, row in enumerate(r for r in fits if r is not reference):
        trace = np.asarray(row["trace"], dtype=float)
        if len(trace) != len(reference_trace):
            continue
        # the running maximum: the per-step difference flips between 0 and an ulp or two, unreadable when drawn
        difference = np.maximum.accumulate(np.nan_to_num(np.abs(trace - reference_trace) / reference_trace, nan=1.0))
        largest = max(largest, float(difference[-1]))
        steps, values = _plotted(np.maximum(difference, 1e-10), reference.get("trace_every", 1))
        bottom.plot(steps, values, lw=1, color=colors[k % 20], label=row["name"])
    bottom.set(
        xscale="log",
        yscale="log",
        xlabel="gradient-descent step",
        ylabel="largest relative difference so far",
        title=f"How far each row's MSE trace has been from the {label} row's, up to each step\n(largest: "
        f"{largest:.2g}; 0 drawn at 1e-10; float32 rows stall ~1e-3 above exact gradient descent)",
    )
    bottom.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    fig.savefig(out / "poly_mse_traces.png", dpi=110)
    plt.close(fig)

    x, y = np.asarray(section.extra["data"]["x"]), np.asarray(section.extra["data"]["y"])
    grid = np.linspace(x.min(), x.max(), 400)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(x, y, "o", ms=3, color="tab:blue", label="data: sin(x)")
    reference_curve = np.polynomial.polynomial.polyval(grid, reference["coeffs"])
    ax.plot(grid, reference_curve, color="tab:gray", lw=6, alpha=0.5, label=f"{label} (GD)")
    ours = next((r for r in fits if r["group"] == "pykernels"), None)
    if ours is not None:
        curve = np.polynomial.polynomial.polyval(grid, ours["coeffs"])
        apart = float(np.max(np.abs(curve - reference_curve)))
        ax.plot(
            grid,
            curve,
            color="tab:orange",
            lw=1.5,
            ls="--",
            label=f"{ours['name']} (GD): on the {label} curve, at most {apart:.1g} apart",
        )
    ax.plot(grid, np.polynomial.polynomial.polyval(grid, optimum["coeffs"]), "k:", label="least-squares optimum")
    ax.set(xlabel="x", ylabel="y", title="Degree-4 fit after gradient descent vs the optimum")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "poly_fit.png", dpi=110)
    plt.close(fig)

    rows = sorted(section.rows, key=lambda r: r["us_per_step"])
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.8))
    group_colors = {"write-up": "tab:gray", "today": "tab:blue", "pykernels": "tab:orange", "floor": "tab:green"}
    bars = ax.barh(
        [r["name"] for r in rows],
        [r["us_per_step"] for r in rows],
        color=[group_colors.get(r["group"], "tab:purple") for r in rows],
    )
    for bar, row in zip(bars, rows, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {row['us_per_step']:.3g} µs, {row['speedup']:.3g}x {section.extra['reference_row']}",
            va="center",
            fontsize=7,
        )
    ax.set_xscale("log")
    times = [r["us_per_step"] for r in rows]
    ax.set_xlim(min(times) / 2, max(times) * 40)  # room for the labels right of the bars
    ax.set(
        xlabel="µs per training step (log scale)",
        title="Polynomial fit: time per training step\n"
        "(gray: write-up, blue: today's tools, orange: pykernels, green: floor, no fit)",
    )
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "poly_times.png", dpi=110)
    plt.close(fig)


def plot_speed(section: SectionResult, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.8))
    labels = [f"{r['workload']} {r['size']}² ×{r['loops']}\n{r['name']}" for r in section.rows]
    positions = np.arange(len(labels))
    series = [
        ("write-up (%%time)", "write_up_seconds"),
        ("as written (synchronized)", "as_written_seconds"),
        ("op alone", "op_alone_seconds"),
        ("op alone, preallocated result", "op_preallocated_seconds"),
    ]
    width = 0.8 / len(series)
    for k, (label, key) in enumerate(series):
        values = [r.get(key) or np.nan for r in section.rows]
        ax.bar(positions + (k - (len(series) - 1) / 2) * width, values, width=width, label=label)
    ax.set_xticks(positions, labels, fontsize=7)
    ax.set(yscale="log", ylabel="seconds (log scale)", title="Write-up 1 speed comparisons, timed correctly")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=len(series))
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)


def coinciding_groups(rows: list[dict]) -> list[list[dict]]:
    """Rows whose loss curves are the same to plotting accuracy (within 5%: same samples, same arithmetic up to
    rounding): drawn as one line, or all but the last would be hidden under it."""
    groups: list[list[dict]] = []

    def finite(row):  # past an overflow the values are inf or nan, and the plot draws neither
        losses = np.asarray(row["losses"], dtype=float)
        return np.where(np.isfinite(losses), losses, np.nan)

    for row in rows:
        losses = finite(row)
        for group in groups:
            other = finite(group[0])
            if other.shape == losses.shape and np.allclose(losses, other, rtol=0.05, atol=0, equal_nan=True):
                group.append(row)
                break
        else:
            groups.append([row])
    return groups


def plot_large(section: SectionResult, out: Path) -> None:
    import textwrap

    config = section.extra["config"]
    fig = plt.figure(figsize=(12, 10))
    grid = fig.add_gridspec(2, 2, height_ratios=(1.1, 1))
    bars_ax = fig.add_subplot(grid[0, :])
    labels = [textwrap.fill(f"{r['name']}, lr={r['lr']:.2g}", 55) for r in section.rows]
    sampled = [not r["sample_in_kernel"] for r in section.rows]
    gen = [r["generation_ms_per_epoch"] if s else 0.0 for r, s in zip(section.rows, sampled, strict=True)]
    train = [r["training_ms_per_epoch"] if s else 0.0 for r, s in zip(section.rows, sampled, strict=True)]
    whole = [0.0 if s else r["epoch_ms"] for r, s in zip(section.rows, sampled, strict=True)]
    bars_ax.barh(labels, gen, color="lightgray", edgecolor="gray", label="torch.randn sample")
    bars_ax.barh(labels, train, left=gen, color="tab:blue", label="training step")
    bars_ax.barh(labels, whole, color="tab:purple", label="whole epoch, sample drawn in the kernel")
    for k, row in enumerate(section.rows):
        bars_ax.text(row["epoch_ms"], k, f" {row['epoch_ms']:.3g} ms", va="center", fontsize=7)
    bars_ax.set_xlim(right=max(r["epoch_ms"] for r in section.rows) * 1.15)
    bars_ax.set(xlabel="ms per epoch", title=f"Per-epoch time, N = {config['n']:,}")
    bars_ax.invert_yaxis()
    bars_ax.tick_params(axis="y", labelsize=7)
    bars_ax.legend(fontsize=8, loc="lower right")
    colors = plt.get_cmap("tab10").colors
    for column, lr in enumerate((config["seed_lr"], config["stable_lr"])):
        ax = fig.add_subplot(grid[1, column])
        for k, group in enumerate(coinciding_groups([r for r in section.rows if r["lr"] == lr])):
            losses = np.asarray(group[0]["losses"], dtype=float)
            names = "; ".join(r["name"] for r in group)
            label = f"{names} (the same line)" if len(group) > 1 else names
            ax.plot(
                np.arange(1, len(losses) + 1),
                np.where(np.isfinite(losses), losses, np.nan),
                color=colors[k % 10],
                lw=1.2,
                label=textwrap.fill(label, 70),
            )
        ax.set(
            yscale="log",
            xlabel="epoch",
            ylabel="squared error on the epoch's sample",
            title=f"lr = {lr:.3g}" + (" (lines end where the loss overflowed)" if lr == config["seed_lr"] else ""),
        )
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    fig.savefig(out / "large.png", dpi=110)
    plt.close(fig)


def gram_markdown(section: SectionResult) -> str:
    config = section.extra["config"]
    many = [r for r in section.rows if r["kind"] == "many"]
    many_table = _table(
        ["workload", "seconds", "fit / poly_mse calls", "others' CPU"],
        [
            [f"`{r['name']}`", _fmt(r["seconds"], ".4g"), _fmt(r.get("vs_poly_mse_calls"), ".3g"), load_cell(r)]
            for r in many
        ],
    )
    boundary_rows = []
    for r in (r for r in section.rows if r["kind"] == "boundary"):
        for result in r["results"]:
            boundary_rows.append(
                [
                    r["name"],
                    _fmt(r["condition"], ".2g") if r["condition"] is not None else "> 1e15",
                    f"{result['steps']:,}",
                    _fmt(result["bound"], ".2g"),
                    f"{result['auto']} / {result['auto_float32']}",
                    _fmt(result["gram_error"], ".2g"),
                    _fmt(result["data_error"], ".2g"),
                ]
            )
    boundary_table = _table(
        [
            "x, degree",
            "cond(A)",
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
                _fmt(r["seconds"], ".3g"),
                ", ".join(f"{count} {name.removeprefix('gloo:')}" for name, count in sorted(r["collectives"].items())),
                _fmt(r["last_loss"], ".6g"),
                _fmt(r.get("coeffs_vs_one_process"), ".2g"),
            ]
            for r in sharded["rows"]
        ],
    )
    notes = "".join("\n- " + n for n in section.notes)
    return f"""## {section.title}

`fit_poly(method="gram")` makes one float64 pass for A = VᵀV/N, b = Vᵀy/N, s = yᵀy/N (`poly_moments`) and then steps
on them, (D+1)² work per step whatever N is (`fit_poly_moments`); the seed fit's rows are in the first section.

**Many points**: N = {config["points"]:,} points of sin(3x) on [-1, 1], float32, degree 4; the whole gram fit
of {config["steps"]:,} steps (its pass over the data included) against {config["steps"] // 1000} calls of `poly_mse`
on the same data (one data-pass step each); median of {config["repeat"]}.

{many_table}

**The accuracy boundary**: {BOUNDARY_POINTS_TEXT},
lr = 0.45 / λmax(A), from zeros, float64. Errors: relative (2-norm) distance of the coefficients after T steps from
exact gradient descent (its closed form in 80-digit arithmetic). The statistics are rounded once and their error
acts at every step, so it grows with the steps (bound ≈ eps T at a stable lr once cond(A) > T), where the data pass's
grows with their square root; `auto` keeps the statistics while the bound is at most {pykernels_tolerance_text()}.

{boundary_table}

**Sharded data**: {config["sharded_points"]:,} points of sin(3x) on [0, 1], float64, degree 4, every other point
on each of 2 gloo processes (one thread each), {config["sharded_steps"]:,} steps at lr 0.5 by each route (DDP
all-reduces the gradient at every step, and `train_ddp` the loss it reports; `fit_poly_distributed` gathers each
rank's layout, 4 integers, then all-reduces the statistics once). One process's gram fit of all the points ends at
loss {_fmt(sharded["one_process_last_loss"], ".6g")}.

{sharded_table}
{notes}
"""


BOUNDARY_POINTS_TEXT = "200 points of y = sin(3 (x - a) / (b - a)) on each [a, b]"


def pykernels_tolerance_text() -> str:
    from pykernels.ops import GRAM_TOLERANCE

    return (
        f"{GRAM_TOLERANCE[torch.float64]:.2g} for float64 data and {GRAM_TOLERANCE[torch.float32]:.2g} (float32's "
        "rounding) for float32 data"
    )


MARKDOWN = {
    "poly": poly_markdown,
    "speed": speed_markdown,
    "large": large_markdown,
    "batched": batched_markdown,
    "gram": gram_markdown,
}
PLOTS = {"poly": plot_poly, "speed": plot_speed, "large": plot_large}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


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


def write(out: Path, sections: dict[str, SectionResult], machine: dict, command: str, settings: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for key, section in sections.items():
        if section.rows and key in PLOTS:
            PLOTS[key](section, out)
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    body = "\n\n".join(
        MARKDOWN[key](section) if section.rows else f"## {section.title}\n\nNo row ran here.{_skipped(section)}\n"
        for key, section in sections.items()
    )
    report = f"""# pykernels study: the two write-ups, reproduced and timed

Command: `{command}`

Machine: {machine["cpu"]}, {machine["logical_cpus"]} logical CPUs, torch threads {machine["torch_threads"]},
GPU: {machine["gpu"] or "none"}. Versions: {versions}; Python {machine["python"]}.
THP_MEM_ALLOC_ENABLE={machine["THP_MEM_ALLOC_ENABLE"] or "unset"} (huge pages for torch's CPU allocations).
Load average (1, 5, 15 min) at the start: {_loads(machine.get("load_average_start"))}; at the end:
{_loads(machine.get("load_average_end"))}. Each row records the share of the CPUs other processes used while it ran;
rows where others used more than {BUSY_CPUS:g} CPUs on average are marked busy.
Settings: {json.dumps(settings)}

Timing: time.perf_counter around the training steps only (progress bars move between timed blocks), after a
warm-up; CUDA is synchronized before every clock read. Compare rows within this report, not across machines.

{body}
"""
    (out / "report.md").write_text(report)
    payload = {
        "command": command,
        "machine": machine,
        "settings": settings,
        "sections": decimate_traces({k: s.to_json() for k, s in sections.items()}),
    }
    (out / "results.json").write_text(json.dumps(_jsonable(payload), indent=1))
    return out / "report.md"
