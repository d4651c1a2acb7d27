"""The study's plots, one PNG per question (each function's docstring says which)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np

from ._common import SectionResult, mse_reference_row

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
    reference = mse_reference_row(section)
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


PLOTS = {"poly": plot_poly, "speed": plot_speed, "large": plot_large}
