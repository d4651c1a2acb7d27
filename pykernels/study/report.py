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

from ._common import SectionResult


def _times(value: float | None, spec: str) -> str:
    """A speedup: '12.3x', or a dash where there is none."""
    return "–" if value is None else _fmt(value, spec) + "x"


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _skipped(section: SectionResult) -> str:
    if not section.skipped:
        return ""
    return "\n\nSkipped here: " + "; ".join(f"`{s.name}` ({s.reason})" for s in section.skipped) + "."


def poly_markdown(section: SectionResult) -> str:
    config, optimum = section.extra["config"], section.extra["optimum"]
    rows = [
        [
            f"`{r['name']}`",
            r["group"],
            _fmt(r["seconds"], ".3g"),
            _fmt(r["us_per_step"], ".3g"),  # 3 significant digits: the fused rows take hundredths of a µs
            _fmt(r["speedup_vs_numpy"], ".3g") + "x",
            _fmt(r["final_mse"], ".6f"),
            "yes" if r["converged_same"] else "**NO**",
            _fmt(r["first_call_seconds"], ".2f"),
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
            "speedup vs numpy",
            "final MSE",
            "same MSE",
            "first call / compile (s)",
            "note",
        ],
        rows,
    )
    return f"""## {section.title}

x = linspace(0, 5, {config["samples"]}), y = sin x, degree {config["degree"]}, zeros init, {config["steps"]:,} steps
at lr {config["lr"]:g}, float32, MSE recorded every step; median of {config["repeat"]} timed run(s) after a
warm-up run. "same MSE": final MSE within {config["mse_rtol"]:.0e} (relative) of the numpy row's.

{table}{_skipped(section)}

**The problem is ill-conditioned, so every row stops far from the best fit.** The least-squares optimum of degree
{config["degree"]} has MSE **{optimum["mse"]:.6f}**; gradient descent ends at {section.rows[0]["final_mse"]:.6f}
after {config["steps"]:,} steps. The MSE's Hessian (2/N XᵀX of the power matrix) has condition number
{optimum["hessian_condition_number"]:.3g}: lr must stay below {optimum["largest_stable_lr"]:.3g} for the stiffest
direction, and at lr {config["lr"]:g} the flattest direction needs ~{optimum["slowest_mode_steps_at_lr"]:.3g} steps.
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
        ],
        rows,
    )
    notes = "".join("\n- " + n for n in section.notes)
    return f"## {section.title}\n\n{table}{_skipped(section)}\n{notes}\n\n![speed comparisons](speed.png)\n"


def large_markdown(section: SectionResult) -> str:
    def outcome(r):
        if r["diverged_at_epoch"] is not None:
            return f"diverged (non-finite at epoch {r['diverged_at_epoch']})"
        growth = f" (last/first tenth: {r['loss_growth']:.3g}x)"
        return ("stable" if r["stable"] else "growing") + growth

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
            outcome(r),
            _fmt(r["write_up_seconds"], ".3g"),
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
            "outcome",
            "write-up total (s)",
            "note",
        ],
        rows,
    )
    notes = "".join("\n- " + n for n in section.notes)
    return (
        f"## {section.title}\n\nN = {config['n']:,} weights, {config['epochs']} epochs, a fresh sample per "
        "epoch (torch.randn, timed apart as 'randn', or drawn in-kernel). Speedups are against the torch-autograd "
        f"row at the same lr: the whole epoch, sample included, and the training step alone.\n\n{table}"
        f"{_skipped(section)}\n{notes}\n\n![large problem](large.png)\n"
    )


def batched_markdown(section: SectionResult) -> str:
    config = section.extra["config"]
    rows = [
        [
            f"`{r['name']}`",
            _fmt(r["seconds"], ".3f"),
            _fmt(r["ns_per_series_step"], ".2f"),
            _fmt(r["speedup_vs_numpy"], ".1f") + "x",
            _fmt(r["mean_final_mse"], ".6f"),
            "yes" if r["converged_same"] else "**NO**",
        ]
        for r in section.rows
    ]
    table = _table(["row", "seconds", "ns per series x step", "speedup vs numpy", "mean final MSE", "same MSE"], rows)
    notes = "".join("\n- " + n for n in section.notes)
    return (
        f"## {section.title}\n\nB = {config['series']} series sharing x, N = {config['samples']}, degree "
        f"{config['degree']}, {config['steps']} steps at lr {config['lr']:g}, float32, every loss recorded."
        f"\n\n{table}{_skipped(section)}\n{notes}\n"
    )


def plot_poly(section: SectionResult, out: Path) -> None:
    optimum = section.extra["optimum"]
    fig, ax = plt.subplots(figsize=(9, 5))
    for row in section.rows:
        if row["group"] == "floor":  # trains nothing
            continue
        every = row.get("trace_every", 1)
        ax.plot(np.arange(len(row["trace"])) * every + 1, row["trace"], label=row["name"], alpha=0.7, lw=1)
    ax.axhline(optimum["mse"], color="k", ls="--", lw=1, label=f"least-squares optimum ({optimum['mse']:.2g})")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="gradient-descent step",
        ylabel="MSE",
        title="Polynomial fit: MSE per step (all rows overlap when they agree)",
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "poly_mse_traces.png", dpi=110)
    plt.close(fig)

    x, y = np.asarray(section.extra["data"]["x"]), np.asarray(section.extra["data"]["y"])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(x, y, "o", ms=3, label="data: sin(x)")
    grid = np.linspace(x.min(), x.max(), 400)
    for row in section.rows[:1] + [r for r in section.rows if r["group"] == "pykernels"][:1]:
        ax.plot(grid, np.polynomial.polynomial.polyval(grid, row["coeffs"]), label=f"{row['name']} (GD)")
    ax.plot(grid, np.polynomial.polynomial.polyval(grid, optimum["coeffs"]), "k--", label="least-squares optimum")
    ax.set(xlabel="x", ylabel="y", title="Degree-4 fit after gradient descent vs the optimum")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "poly_fit.png", dpi=110)
    plt.close(fig)

    rows = sorted(section.rows, key=lambda r: r["us_per_step"])
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    colors = {"write-up": "tab:gray", "today": "tab:blue", "pykernels": "tab:orange"}
    bars = ax.barh(
        [r["name"] for r in rows],
        [r["us_per_step"] for r in rows],
        color=[colors.get(r["group"], "tab:green") for r in rows],
    )
    for bar, row in zip(bars, rows, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {row['speedup_vs_numpy']:.1f}x vs numpy",
            va="center",
            fontsize=7,
        )
    ax.set(
        xscale="log",
        xlabel="µs per training step (log scale)",
        title="Polynomial fit: time per training step\n"
        "(gray: write-up, blue: today's tools, orange: pykernels, green: floor)",
    )
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out / "poly_times.png", dpi=110)
    plt.close(fig)


def plot_speed(section: SectionResult, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{r['workload']} {r['size']}² ×{r['loops']}\n{r['name']}" for r in section.rows]
    positions = np.arange(len(labels))
    series = [
        ("write-up", "write_up_seconds"),
        ("as written (synchronized)", "as_written_seconds"),
        ("op alone", "op_alone_seconds"),
    ]
    for k, (label, key) in enumerate(series):
        values = [r.get(key) or np.nan for r in section.rows]
        ax.bar(positions + (k - 1) * 0.27, values, width=0.27, label=label)
    ax.set_xticks(positions, labels, fontsize=7)
    ax.set(yscale="log", ylabel="seconds (log scale)", title="Write-up 1 speed comparisons, timed correctly")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)


def plot_large(section: SectionResult, out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['name']}\nlr={r['lr']:.2g}" for r in section.rows]
    gen = [r["generation_ms_per_epoch"] for r in section.rows]
    train = [r["training_ms_per_epoch"] for r in section.rows]
    left.barh(labels, gen, label="randn sample")
    left.barh(labels, train, left=gen, label="training step (with the sample where drawn in-kernel)")
    left.set(xlabel="ms per epoch", title="Per-epoch time")
    left.invert_yaxis()
    left.legend(fontsize=8)
    left.tick_params(axis="y", labelsize=7)
    for row in section.rows:
        losses = np.asarray(row["losses"], dtype=float)
        right.plot(
            np.arange(1, len(losses) + 1),
            np.where(np.isfinite(losses), losses, np.nan),
            label=f"{row['name']} lr={row['lr']:.2g}",
        )
    right.set(
        yscale="log",
        xlabel="epoch",
        ylabel="squared error on the epoch's sample",
        title="Loss (lines end where it overflowed)",
    )
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "large.png", dpi=110)
    plt.close(fig)


MARKDOWN = {"poly": poly_markdown, "speed": speed_markdown, "large": large_markdown, "batched": batched_markdown}
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
    body = "\n\n".join(MARKDOWN[key](section) for key, section in sections.items())
    report = f"""# pykernels study: the two write-ups, reproduced and timed

Command: `{command}`

Machine: {machine["cpu"]}, {machine["logical_cpus"]} logical CPUs, torch threads {machine["torch_threads"]},
GPU: {machine["gpu"] or "none"}. Versions: {versions}; Python {machine["python"]}.
THP_MEM_ALLOC_ENABLE={machine["THP_MEM_ALLOC_ENABLE"] or "unset"} (huge pages for torch's CPU allocations).
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
