"""The study's plots: one PNG per question, each drawn by a ``figure_*`` function whose docstring states it.

``FIGURES`` maps a section key to its files and the functions that draw them; report.py writes a section's files
with :func:`draw_section`. Every figure labels its lines and bars directly where it
can (a reader should get the answer without a legend), keeps to a few colours that mean the same thing across
figures, and says in a visible note which rows did not run here (no GPU, a package missing).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ._common import SectionResult, mse_reference_row, plain, ratio, skipped_by_reason, speedup
from .large import TRAINING, outcome_words, size_words
from .large import outcomes as _grouped
from .limits import BOUND_WORDS

MAX_PLOT_POINTS = 4000  # per line: 200,000-step traces drawn at every k-th step
DPI = 110

# Large enough to read at the saved size (nothing below 9 pt); figures are 10-12 inches wide at DPI 110.
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12.5,
    "axes.labelsize": 11.5,
    "xtick.labelsize": 10.5,
    "ytick.labelsize": 10.5,
    "legend.fontsize": 10,
    "figure.titlesize": 13.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
NOTE_SIZE = 10  # the smallest text drawn: bar values, direct labels, the skip note

# Colours with one meaning each, the same in every figure.
WRITE_UP = "#8c8c8c"  # the write-ups' own rows and figures
REFERENCE = "#222222"  # exact (float64) gradient descent, the row every fit is compared with
TODAY = "tab:blue"  # today's tools (torch.compile, numba) and torch's own ops
PYKERNELS = "tab:orange"
FLOOR = "tab:green"  # the floor: the loop's overhead, no fit
SAMPLE = "#d0d0d0"  # time spent drawing the random sample (torch.randn)
IN_KERNEL = "tab:purple"  # pykernels rows that draw their sample inside the kernel

POLY_GROUPS = {  # group -> (colour, words in the key)
    "write-up": (WRITE_UP, "the polynomial write-up's rows"),
    "reference": (REFERENCE, "exact gradient descent (float64 weights)"),
    "today": (TODAY, "today's tools"),
    "pykernels": (PYKERNELS, "pykernels"),
    "floor": (FLOOR, "floor: an empty autograd step (no fit)"),
}
SPARE_COLORS = ("tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _plotted(trace: list | np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a trace thinned to at most MAX_PLOT_POINTS points (the last step always kept)."""
    values = np.asarray(trace, dtype=float)
    stride = max(1, len(values) // MAX_PLOT_POINTS)
    index = np.unique(np.append(np.arange(0, len(values), stride), len(values) - 1))
    return index * every + 1, values[index]


def _positive_finite(value: float | None) -> bool:
    """Whether ``value`` can be drawn on a log axis (a number above 0 that is neither inf nor NaN)."""
    return value is not None and math.isfinite(value) and value > 0


def duration(seconds: float) -> str:
    """A time in the unit that keeps it short: '4.97 ns', '15.7 µs', '91.3 ms', '1.36 s'."""
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if abs(seconds) >= scale or unit == "ns":
            return f"{plain(seconds / scale)} {unit}"
    raise AssertionError("unreachable")


def times_word(ratio: float, baseline: str) -> str:
    """'391x faster than numpy', '2.6x slower than numpy', or 'as fast as numpy' (within 5%)."""
    if 1 / 1.05 <= ratio <= 1.05:
        return f"as fast as {baseline}"
    faster = ratio > 1
    factor = ratio if faster else 1 / ratio
    amount = speedup(factor).removesuffix("x").strip()  # the report's rounding: two significant digits
    return f"{amount}x {'faster' if faster else 'slower'} than {baseline}"


def skip_note(section: SectionResult) -> str | None:
    """One line saying which rows did not run here and why, grouped by reason ('17 GPU rows not run: no CUDA
    GPU'), or None when every row ran."""
    parts = []
    for reason, names in skipped_by_reason(section).items():
        kind = "GPU rows" if all("gpu" in n.lower() for n in names) else "rows"
        if len(names) == 1:
            kind = kind[:-1]
        parts.append(f"{len(names)} {kind} not run: {reason}")
    return "; ".join(parts) or None


def _finish(fig: Figure, section: SectionResult) -> Figure:
    """Lay the figure out, with the skip note (if any) along its bottom edge where every reader passes it."""
    note = skip_note(section)
    if note is None:
        fig.tight_layout()
        return fig
    lines = textwrap.wrap(f"Not shown: {note}.", 130)
    fig.text(0.01, 0.01, "\n".join(lines), ha="left", va="bottom", fontsize=NOTE_SIZE, color="dimgray")
    fig.tight_layout(rect=(0, 0.035 * len(lines) * 10 / fig.get_figheight(), 1, 1))
    return fig


# --- the polynomial write-up: degree-4 fit to sin(x) ---------------------------------------------------------------


def _fits(section: SectionResult) -> list[dict]:
    return [r for r in section.rows if r["group"] != "floor"]  # the floor trains nothing


def _reference_label(reference: dict) -> str:
    return "exact gradient descent (float64)" if reference["group"] == "reference" else reference["name"]


NON_FINITE_DIFFERENCE = 10.0  # where the traces' plot draws a difference that is infinite, NaN or above it


def figure_poly_traces(section: SectionResult) -> Figure | None:
    """Does every implementation train the same model as exact gradient descent?

    Top: the MSE per step of exact (float64) gradient descent, which every row follows to the width of the line,
    against the least-squares optimum. Bottom: how far each row's MSE has strayed from it so far, the rows grouped
    by how far they end (agreeing to rounding, within the report's 'same MSE' tolerance, or outside it), each group
    drawn as its band (fewest to most) and labelled at its end.
    """
    fits = _fits(section)
    if not fits:
        return None
    optimum = section.extra["optimum"]
    tolerance = section.extra.get("config", {}).get("mse_rtol", 2e-3)
    reference = mse_reference_row(section)
    reference_trace = np.asarray(reference["trace"], dtype=float)
    every = reference.get("trace_every", 1)
    label = _reference_label(reference)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8.5), sharex=True, height_ratios=(1, 1.25))

    steps, values = _plotted(reference_trace, every)
    if not np.all(np.isfinite(values)):  # a reference that diverged: its finite part only, or nothing to draw
        keep = np.isfinite(values)
        if not keep.any():
            plt.close(fig)
            return None
        steps, values = steps[keep], values[keep]
    top.plot(steps, values, color=REFERENCE, lw=2.5)
    top.text(steps[-1], values[-1] * 0.7, f"ends at {plain(values[-1], 2)}", ha="right", va="top")
    # the label sits halfway (in log) between the curve's start and the optimum, clear of both
    top.text(1, np.sqrt(values[0] * optimum["mse"]), f"{label}: every row's MSE, to the width of the line")
    top.axhline(optimum["mse"], color=REFERENCE, ls="--", lw=1)
    top.text(1, optimum["mse"] * 1.3, f"least-squares optimum, {plain(optimum['mse'], 2)}", va="bottom")
    top.set(yscale="log", ylabel="MSE (log scale)")
    top.set_title(f"Gradient descent ends {values[-1] / optimum['mse']:.0f}x above the best fit's MSE", loc="left")

    # the running maximum: the per-step difference flips between 0 and an ulp or two, unreadable when drawn
    strays = {}
    for row in fits:
        trace = np.asarray(row["trace"], dtype=float)
        if row is reference or len(trace) != len(reference_trace):
            continue
        difference = np.abs(trace - reference_trace) / reference_trace
        # a diverging row's trace holds inf or NaN: drawn at the top of the scale (a difference of 100%+), not
        # np.nan_to_num's 1.8e308, whose limits overflow the axis
        difference = np.where(np.isfinite(difference), difference, NON_FINITE_DIFFERENCE)
        strays[row["name"]] = np.maximum.accumulate(np.minimum(difference, NON_FINITE_DIFFERENCE))
    floor_value = 1e-10  # where an exact 0 is drawn on the log scale
    # colours of their own: blue and orange mean today's tools and pykernels in the other figures
    groups = (  # (lowest final difference, highest, colour, words)
        (0.0, 1e-5, "teal", "agree to the rounding of the recorded MSE"),
        (1e-5, tolerance, "darkgoldenrod", f"drift, but end within the {plain(tolerance)} tolerance"),
        (tolerance, np.inf, "tab:red", f"end outside the {plain(tolerance)} tolerance"),
    )
    for low, high, color, words in groups:
        members = [n for n, s in strays.items() if low <= s[-1] < high or (high == np.inf and not s[-1] < low)]
        if not members:
            continue
        curves = np.maximum(np.array([strays[n] for n in members]), floor_value)
        steps, lowest = _plotted(curves.min(axis=0), every)
        _, highest = _plotted(curves.max(axis=0), every)
        bottom.fill_between(steps, lowest, highest, color=color, alpha=0.3, lw=0)
        bottom.plot(steps, highest, color=color, lw=2)
        who = "; ".join(members) if len(members) <= 3 else f"{len(members)} rows"
        largest_text = (
            "non-finite or above 1,000%" if highest[-1] >= NON_FINITE_DIFFERENCE else f"largest {plain(highest[-1], 2)}"
        )
        text = textwrap.fill(f"{who}: {words} ({largest_text})", 46)
        # the lowest group's label goes under its line's end, the others' left of theirs (they rise at the end)
        bottom.annotate(
            text,
            (steps[-1], highest[-1]),
            xytext=(-45, -2) if low > 0 else (0, -12),
            textcoords="offset points",
            ha="right",
            va="top",
            color=color,
            fontsize=NOTE_SIZE,
            fontweight="bold",
        )
    bottom.axhline(tolerance, color="tab:red", ls=":", lw=1.2)
    # at the left: the groups' labels sit at the right, where the lines end
    bottom.text(
        1, tolerance * 1.3, f"the report's 'same MSE' tolerance, {plain(tolerance)}", color="tab:red", va="bottom"
    )
    largest_drawn = max((float(s.max()) for s in strays.values()), default=tolerance)
    lowest_drawn = min((max(float(s.min()), floor_value) for s in strays.values()), default=floor_value)
    bottom.set(
        xscale="log",
        yscale="log",
        ylim=(lowest_drawn / 100, max(tolerance, largest_drawn) * 8),  # room under the lowest line for its label
        xlabel="gradient-descent step (log scale)",
        ylabel="largest relative difference\nfrom exact GD so far",
    )
    largest = max((s[-1] for s in strays.values()), default=0.0)
    bottom.set_title(
        f"Every row stays within {plain(largest, 1)} of {label}"
        if largest <= tolerance
        else f"Some rows leave {label} by more than {plain(tolerance)}",
        loc="left",
    )
    fig.suptitle("Does every implementation train the same model as exact gradient descent?", x=0.02, ha="left")
    return _finish(fig, section)


def figure_poly_fit(section: SectionResult) -> Figure | None:
    """How close does gradient descent get to the best degree-4 fit of sin(x)?

    The data, the least-squares optimum and the curve gradient descent ends on (every row's, pykernels' drawn over
    the exact one), each labelled where it runs.
    """
    fits = _fits(section)
    if not fits:
        return None
    optimum = section.extra["optimum"]
    reference = mse_reference_row(section)
    steps = section.extra.get("config", {}).get("steps")
    x, y = np.asarray(section.extra["data"]["x"]), np.asarray(section.extra["data"]["y"])
    grid = np.linspace(x.min(), x.max(), 400)
    span = x.max() - x.min()
    at = lambda fraction: x.min() + fraction * span  # noqa: E731 (a place along the x range, for labels)
    fig, ax = plt.subplots(figsize=(10, 5.5))
    ax.plot(x, y, "o", ms=4, color="tab:blue")
    best = np.polynomial.polynomial.polyval(grid, optimum["coeffs"])
    ax.plot(grid, best, color=REFERENCE, ls=":", lw=2)
    descent = np.polynomial.polynomial.polyval(grid, reference["coeffs"])
    ax.plot(grid, descent, color=WRITE_UP, lw=7, alpha=0.55, solid_capstyle="butt")
    ours = next((r for r in fits if r["group"] == "pykernels"), None)
    ours_words = ""
    if ours is not None:
        curve = np.polynomial.polynomial.polyval(grid, ours["coeffs"])
        ax.plot(grid, curve, color=PYKERNELS, lw=2, ls="--")
        ours_words = f"\ndashed: {ours['name']}, at most {plain(np.max(np.abs(curve - descent)), 1)} away"

    def label(text: str, point: tuple[float, float], place: tuple[float, float], color: str) -> None:
        ax.annotate(
            text,
            point,
            xytext=place,
            color=color,
            fontsize=NOTE_SIZE + 0.5,
            arrowprops={"arrowstyle": "-", "color": color, "lw": 1},
        )

    on_data = np.argmin(np.abs(x - at(0.72)))
    label(f"data: sin(x), {len(x)} points", (x[on_data], y[on_data]), (at(0.74), 0.55), "tab:blue")
    peak = np.argmax(best)
    label(
        f"best degree-4 fit (least squares), MSE {plain(optimum['mse'], 2)}",
        (grid[peak], best[peak]),
        (at(0.36), 1.22),
        REFERENCE,
    )
    start = np.argmin(np.abs(grid - at(0.06)))
    label(
        f"gradient descent after {steps:,} steps, MSE {plain(reference['final_mse'], 2)}"
        f"\n(every row's curve){ours_words}"
        if steps
        else f"gradient descent, MSE {plain(reference['final_mse'], 2)}{ours_words}",
        (grid[start], descent[start]),
        (at(0.0), -0.75),
        "dimgray",
    )
    ax.set(xlabel="x", ylabel="y", ylim=(min(y.min(), best.min()) - 0.15, 1.45))
    worse = reference["final_mse"] / optimum["mse"]
    ax.set_title(f"Gradient descent stops short of the best fit: its MSE is {worse:.0f}x the optimum's", loc="left")
    return _finish(fig, section)


def figure_poly_times(section: SectionResult) -> Figure | None:
    """How long does one training step take in each implementation, against the polynomial write-up's numpy?

    One bar per row, fastest first, coloured by where the row comes from (every colour in the key), its time and
    its speed against the baseline written at its end.
    """
    # a row whose time is not a finite positive number (a failed or corrupted measurement) has no bar to draw
    unmeasured = [r["name"] for r in section.rows if not _positive_finite(r["us_per_step"])]
    rows = sorted((r for r in section.rows if _positive_finite(r["us_per_step"])), key=lambda r: r["us_per_step"])
    if not rows:
        return None
    baseline = section.extra["reference_row"]
    colors = dict(POLY_GROUPS)
    for group in dict.fromkeys(r["group"] for r in rows):  # a group added later still gets a colour and a key entry
        if group not in colors:
            colors[group] = (SPARE_COLORS[(len(colors) - len(POLY_GROUPS)) % len(SPARE_COLORS)], group)
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 2.2))
    bars = ax.barh(
        [r["name"] for r in rows], [r["us_per_step"] for r in rows], color=[colors[r["group"]][0] for r in rows]
    )
    for bar, row in zip(bars, rows, strict=True):
        words = (
            "the baseline"
            if row["name"] == baseline
            else times_word(row["speedup"], baseline)
            if _positive_finite(row["speedup"])
            else "no speedup measured"
        )
        ax.text(
            bar.get_width() * 1.08,
            bar.get_y() + bar.get_height() / 2,
            f"{duration(row['us_per_step'] * 1e-6)}, {words}",
            va="center",
            fontsize=NOTE_SIZE,
        )
    times = [r["us_per_step"] for r in rows]
    ax.set_xscale("log")
    ax.set_xlim(min(times) / 2, max(times) * 300)  # room for the words right of the bars
    # ticks in the bars' own units (ns, µs), not powers of ten of µs
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda us, _: duration(us * 1e-6)))
    ax.set_xlabel("time per training step (log scale; shorter is faster)")
    ax.tick_params(axis="y", length=0)
    ax.invert_yaxis()
    present = dict.fromkeys(r["group"] for r in rows)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[g][0]) for g in present]
    # under the axis: inside, the key would cover the words at the bars' ends
    ax.legend(
        handles,
        [colors[g][1] for g in present],
        loc="upper center",
        bbox_to_anchor=(0.35, -0.09),
        ncol=2,
        frameon=False,
        title="colour: the row is",
    )
    ax.set_title(
        "Polynomial write-up: time per gradient-descent step, fastest first"
        + (f"\nnot drawn (no finite time): {', '.join(unmeasured)}" if unmeasured else ""),
        loc="left",
    )
    return _finish(fig, section)


# --- the speed write-up: matmul and add loops, NumPy vs torch --------------------------------------------------------

SPEED_MEASURES = (  # (row key, words, colour): from everything the loop timed to the operation alone
    ("write_up_seconds", "the speed write-up's %%time", WRITE_UP),
    ("as_written_unsynchronized_seconds", "as written, clock read before the GPU finished", "#9ecae1"),
    ("as_written_seconds", "as written, measured here (2 randn + op)", "#08519c"),
    ("op_alone_seconds", "the operation alone", "#3182bd"),
    ("op_preallocated_seconds", "the operation alone, into a preallocated result", "#6baed6"),
)


def figure_speed(section: SectionResult) -> Figure | None:
    """How much of each loop the speed write-up timed is the operation itself?

    One panel per loop (its sizes), one block of bars per implementation: the write-up's own %%time, the loop as
    written measured here, and the operation alone (into a fresh and into a preallocated result), each bar
    labelled with what it is and its time.
    """
    loops = list(dict.fromkeys((r["workload"], r["size"], r["loops"]) for r in section.rows))
    if not loops:
        return None
    heights = []
    for loop in loops:
        rows = [r for r in section.rows if (r["workload"], r["size"], r["loops"]) == loop]
        heights.append(sum(1 + sum(r.get(k) is not None for k, _, _ in SPEED_MEASURES) for r in rows))
    fig, axes = plt.subplots(
        len(loops), 1, figsize=(11, 0.36 * sum(heights) + 1.6 * len(loops) + 1.2), height_ratios=heights
    )
    shares = []
    for ax, loop in zip(np.atleast_1d(axes), loops, strict=True):
        workload, size, count = loop
        labels, values, colors = [], [], []
        for row in (r for r in section.rows if (r["workload"], r["size"], r["loops"]) == loop):
            impl = row["name"] if row["device"] == "cpu" or "gpu" in row["name"] else f"{row['name']} (GPU)"
            for key, words, color in SPEED_MEASURES:
                if row.get(key) is not None:
                    measured = _positive_finite(row[key])  # inf, NaN or 0: a label without a bar, said so
                    labels.append(f"{impl}: {words}" + ("" if measured else " (not measured)"))
                    values.append(row[key] if measured else np.nan)
                    colors.append(color)
            labels.append("")  # a gap between implementations
            values.append(np.nan)
            colors.append("white")
            share = ratio(row.get("op_alone_seconds"), row.get("as_written_seconds"))
            if math.isfinite(share) and share > 0:
                shares.append(share)
        labels, values, colors = labels[:-1], values[:-1], colors[:-1]
        positions = np.arange(len(labels))
        ax.barh(positions, values, color=colors)
        for position, value in zip(positions, values, strict=True):
            if np.isfinite(value):
                ax.text(value * 1.06, position, duration(value), va="center", fontsize=NOTE_SIZE)
        ax.set_yticks(positions, labels)
        ax.tick_params(axis="y", length=0)
        ax.invert_yaxis()
        finite = [v for v in values if np.isfinite(v)]
        if finite:  # no measured bar in the panel: a linear axis, as a log one has nothing to scale
            ax.set_xscale("log")
            ax.set_xlim(min(finite) / 2, max(finite) * 4)
        ax.set_xlabel(f"seconds for the whole loop of {count}" + (" (log scale)" if finite else ""))
        what = "product" if workload == "matmul" else "sum"
        ax.set_title(f"{workload}: {count} x the {what} of two {size:,}x{size:,} random matrices", loc="left")
    title = "What the speed write-up's loops time"
    if shares:
        low, high = 100 * min(shares), 100 * max(shares)
        title += f": the operation itself is {low:.0f}-{high:.0f}% of each loop as written (the rest is randn)"
    fig.suptitle(textwrap.fill(title, 95), x=0.02, ha="left")
    return _finish(fig, section)


# --- the speed write-up: the 10^7-weight linear model ---------------------------------------------------------------


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


def _implementations(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows by implementation (each ran once per learning rate), in the section's order."""
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    return by_name


def figure_large_time(section: SectionResult) -> Figure | None:
    """How long does one epoch of the 10^7-weight model take, and how much of it is drawing the random sample?

    One bar per implementation (the mean of its runs at the two learning rates; their range in the label), split
    into drawing the sample and the training step, or whole where the kernel draws its own sample; the speed
    write-up's own time per epoch on top.
    """
    config = section.extra["config"]

    def measured(row: dict) -> bool:  # a time that is inf, NaN or 0 has no bar (the title names the row)
        parts = ("epoch_ms",) if row["sample_in_kernel"] else ("epoch_ms", "generation_ms_per_epoch")
        return all(_positive_finite(row[key]) for key in parts) and math.isfinite(row["training_ms_per_epoch"] or 0)

    unmeasured = list(dict.fromkeys(r["name"] for r in section.rows if not measured(r)))
    by_name = _implementations([r for r in section.rows if measured(r)])
    if not by_name:
        return None
    baseline = section.rows[0]["name"]  # the write-up's torch-autograd loop: the speedups' baseline
    labels, sample, training, whole, spans = [], [], [], [], []
    write_up = [r["write_up_ms_per_epoch"] for r in section.rows if _positive_finite(r.get("write_up_ms_per_epoch"))]
    if write_up:
        labels.append("the speed write-up's own time\n(its torch-autograd loop, Colab CPU)")
        sample.append(0.0)
        training.append(0.0)
        whole.append(write_up[0])
        spans.append((write_up[0], write_up[0]))
    for name, rows in by_name.items():
        labels.append(textwrap.fill(name, 40))
        epoch = [r["epoch_ms"] for r in rows]
        spans.append((min(epoch), max(epoch)))
        if rows[0]["sample_in_kernel"]:
            sample.append(0.0)
            training.append(0.0)
            whole.append(float(np.mean(epoch)))
        else:
            sample.append(float(np.mean([r["generation_ms_per_epoch"] for r in rows])))
            training.append(float(np.mean([r["training_ms_per_epoch"] for r in rows])))
            whole.append(0.0)
    fig, ax = plt.subplots(figsize=(11, 0.62 * len(labels) + 2.3))
    positions = np.arange(len(labels))
    whole_colors = [WRITE_UP if write_up and k == 0 else IN_KERNEL for k in positions]
    ax.barh(positions, sample, color=SAMPLE)
    ax.barh(positions, training, left=sample, color=TODAY)
    ax.barh(positions, whole, color=whole_colors)
    baseline_ms = float(np.mean([r["epoch_ms"] for r in by_name[baseline]])) if baseline in by_name else math.nan
    first_split = next((k for k in positions if sample[k] > 0), None)
    for k in positions:
        total = sample[k] + training[k] + whole[k]
        low, high = spans[k]
        value = f"{plain(total)} ms" if high - low <= 0.02 * total else f"{plain(low)}-{plain(high)} ms"
        is_write_up = write_up and k == 0
        if is_write_up:
            words = " (its machine, not this one)"
        elif labels[k] == textwrap.fill(baseline, 40):
            words = ", the baseline"
        elif math.isfinite(baseline_ms):
            words = ", " + times_word(baseline_ms / total, baseline)
        else:
            words = ""
        in_kernel = whole[k] > 0 and not is_write_up
        ax.text(
            total + 1,
            k,
            f"{value}{words}" + ("\n(sample drawn inside the kernel)" if in_kernel else ""),
            va="center",
            fontsize=NOTE_SIZE,
        )
    if first_split is not None:  # the stacked bars' parts, named inside the first one
        k = first_split
        ax.text(sample[k] / 2, k, "drawing the sample\n(torch.randn)", ha="center", va="center", fontsize=NOTE_SIZE)
        ax.text(
            sample[k] + training[k] / 2,
            k,
            "training\nstep",
            ha="center",
            va="center",
            color="white",
            fontsize=NOTE_SIZE,
        )
    ax.set_yticks(positions, labels)
    ax.tick_params(axis="y", length=0)
    ax.invert_yaxis()
    ax.set_xlim(0, max(s[1] for s in spans) * 1.75)
    ax.set_xlabel("milliseconds per epoch (shorter is faster); a range: the runs at the two learning rates")
    fig.suptitle(
        f"Speed write-up's large problem: time per epoch of the {size_words(config['n'])}-weight model, sample "
        "included" + (f"\nnot drawn (no finite time): {', '.join(unmeasured)}" if unmeasured else ""),
        x=0.02,
        ha="left",
    )
    return _finish(fig, section)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of the last ``window`` values at each point (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (sums[index] - sums[start]) / (index - start)


def _typical_growth(rows: list[dict]) -> float:
    """The loss's typical growth per epoch in ``rows``: the geometric mean of last over first finite loss, per epoch,
    the median over the rows (NaN when no row has two finite losses)."""
    rates = []
    for row in rows:
        losses = np.asarray(row["losses"], dtype=float)
        bad = np.flatnonzero(~np.isfinite(losses) | (losses <= 0))
        losses = losses[: bad[0]] if len(bad) else losses
        if len(losses) >= 2:
            rates.append((losses[-1] / losses[0]) ** (1 / (len(losses) - 1)))
    return float(np.median(rates)) if rates else math.nan


def figure_large_loss(section: SectionResult) -> Figure | None:
    """Does the 10^7-weight model train at either learning rate?

    Left, the write-up's lr: the loss grows ~15x per epoch (the plotted rows' geometric mean) until it overflows
    float32.
    Right, the stable lr 0.5/N: each epoch's loss is the squared error on one fresh random sample, noisy by nature
    (the weights' squared error times a chi-square of one degree of freedom), so the raw values are faint dots and
    the running mean over 20 epochs is the line; it stays on the mean loss the untrained weights give: stable, but
    not learning.
    """
    config = section.extra["config"]
    if not section.rows:
        return None
    rates = [lr for lr in (config["seed_lr"], config["stable_lr"]) if any(r["lr"] == lr for r in section.rows)]
    if not rates:
        return None
    fig, axes = plt.subplots(1, len(rates), figsize=(6 * len(rates), 5.8), squeeze=False)
    window = 20
    outcomes = {}
    for ax, lr in zip(axes[0], rates, strict=True):
        rows = [r for r in section.rows if r["lr"] == lr]
        outcomes[lr] = outcome_words(rows)  # the report's classification, from the weights' error
        keys = []  # the lines' direct labels, stacked in the panel's emptiest corner (lower right)
        for group in coinciding_groups(rows):
            losses = np.asarray(group[0]["losses"], dtype=float)
            bad = np.flatnonzero(~np.isfinite(losses))
            if len(bad):  # past an overflow the values mean nothing (inf, nan, or a float32 that wrapped back)
                losses = losses[: bad[0]]
            if len(losses) == 0:
                continue
            epochs = np.arange(1, len(losses) + 1)
            in_kernel = group[0]["sample_in_kernel"]
            color = IN_KERNEL if in_kernel else TODAY
            source = "sample drawn inside the kernel" if in_kernel else "torch.randn sample"
            who = f"{len(group)} rows, one line" if len(group) > 1 else group[0]["name"]
            if group[0]["diverged_at_epoch"] is None:
                ax.plot(epochs, losses, "o", ms=3.5, color=color, alpha=0.3)
                ax.plot(epochs, _running_mean(losses, window), color=color, lw=2.5)
                keys.append((f"{source} ({who})", color))
            else:
                ax.plot(epochs, losses, color=color, lw=2)
                ax.plot(epochs[-1], losses[-1], "x", ms=10, mew=2.5, color=color)
                keys.append((f"{source} ({who}):\noverflows at epoch {group[0]['diverged_at_epoch']}", color))
        if lr == config["stable_lr"]:
            keys.append((f"dots: each epoch; lines: mean of the last {window}", "dimgray"))
        y = 0.04
        for text, color in reversed(keys):
            shown = ax.text(
                0.98,
                y,
                text,
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                color=color,
                fontsize=NOTE_SIZE,
                fontweight="bold",
                bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1},
            )
            y += 0.075 * (1 + shown.get_text().count("\n"))
        ax.set(yscale="log", xlabel="epoch (one fresh random sample each)", ylabel="squared error on the sample")
        if lr == config["stable_lr"]:
            first = [r["weight_error_first"] for r in rows if np.isfinite(r["weight_error_first"])]
            last = [r["weight_error_last"] for r in rows if np.isfinite(r["weight_error_last"])]
            if first:
                untrained = config["n"] * first[0] ** 2  # the loss's mean for weights that have not moved
                ax.axhline(untrained, color=REFERENCE, ls="--", lw=1.2)
                ax.text(
                    1,
                    untrained * 2.5,
                    f"the untrained weights' mean loss, {plain(untrained, 2)}",
                    va="bottom",
                    fontsize=NOTE_SIZE,
                    color=REFERENCE,
                    bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1},
                )
            moved = f"\nweights' RMS error {plain(first[0], 5)} -> {plain(min(last), 5)}" if first and last else ""
            ax.set_title(f"lr = {plain(lr, 2)} (0.5/N): {outcomes[lr]}{moved}", loc="left")
        else:
            # the typical (geometric) growth per epoch of the lines drawn: the model's mean growth (~41x at 10^7)
            # is pulled up by rare large samples, and the plotted lines rise ~15x an epoch
            growth = _typical_growth(rows)
            why = f"\nthe plotted loss grows ~{plain(growth, 2)}x per epoch (geometric mean)" if growth > 1.5 else ""
            ax.set_title(f"lr = {plain(lr, 2)} (the write-up's): {outcomes[lr]}{why}", loc="left")
    answer = (
        f"Not at {'either learning rate' if len(rates) > 1 else f'lr {plain(rates[0], 2)}'} "
        f"in {config['epochs']} epochs"
        if outcomes and all(TRAINING not in _grouped([r for r in section.rows if r["lr"] == lr]) for lr in rates)
        else "; ".join(f"lr {plain(lr, 2)}: {outcome}" for lr, outcome in outcomes.items())
    )
    title = f"Does the {size_words(config['n'])}-weight model train? {answer}"
    fig.suptitle(textwrap.fill(title, 9 * 6 * len(rates)), x=0.02, ha="left")  # ~9 characters an inch
    return _finish(fig, section)


# --- writing the files -----------------------------------------------------------------------------------------------

LIMIT_COLORS = {  # bound -> colour: the kind of limit a row is measured against
    "fma_float32": "tab:blue",
    "fma_float64": "tab:orange",
    "memory": "tab:green",
    "philox": "tab:purple",
}


def figure_limits(section: SectionResult) -> Figure | None:
    """How close does each fused row come to what this machine can do?

    One bar per row: its fraction of the limit for its work (the FMA rate, the memory passes' rates or the Philox
    rate, measured in the same run), on a log axis with the limit (1) marked; the colour says which limit.
    """
    rows = [r for r in section.rows if _positive_finite(r.get("fraction"))]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 2.6))
    positions = np.arange(len(rows))
    fractions = [r["fraction"] for r in rows]
    ax.barh(positions, fractions, color=[LIMIT_COLORS[r["bound"]] for r in rows])
    for position, fraction in zip(positions, fractions, strict=True):
        ax.text(fraction * 1.08, position, plain(fraction, 2), va="center", fontsize=NOTE_SIZE)
    names = [r["name"].removeprefix("pykernels ").replace("sample in-kernel, ", "") for r in rows]
    ax.set_yticks(positions, names)
    ax.tick_params(axis="y", length=0)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min(fractions) / 2, max(2.0, max(fractions) * 3))
    ax.axvline(1.0, color=REFERENCE, linewidth=1)
    ax.text(1.0, -0.7, "the machine's limit ", fontsize=NOTE_SIZE, va="bottom", ha="right")
    ax.set_xlabel("fraction of the limit: the limit's time over the row's (log scale)")
    bounds = [b for b in LIMIT_COLORS if any(r["bound"] == b for r in rows)]
    ax.legend(
        [plt.Rectangle((0, 0), 1, 1, color=LIMIT_COLORS[b]) for b in bounds],
        [BOUND_WORDS[b] for b in bounds],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.9 / (0.42 * len(rows) + 0.8)),
        ncol=2,
        frameon=False,
        fontsize=NOTE_SIZE,
    )
    best = max(rows, key=lambda r: r["fraction"])
    closest = f"{names[rows.index(best)]} at {plain(best['fraction'], 2)}"
    title = f"Each fused row's distance to this machine's limit: the closest is {closest}"
    fig.suptitle(textwrap.fill(title, 95), x=0.02, ha="left")
    return _finish(fig, section)


FIGURES: dict[str, dict[str, Callable[[SectionResult], Figure | None]]] = {
    "poly": {
        "poly_mse_traces.png": figure_poly_traces,
        "poly_fit.png": figure_poly_fit,
        "poly_times.png": figure_poly_times,
    },
    "speed": {"speed.png": figure_speed},
    "large": {"large.png": figure_large_time, "large_loss.png": figure_large_loss},
    "limits": {"limits.png": figure_limits},
}


def render(draw: Callable[[SectionResult], Figure | None], section: SectionResult, path: Path) -> bool:
    """Draw one figure in the study's style and save it to ``path``; the figure is closed whatever happens (a
    study writes many). False when the section has nothing for it to draw."""
    with plt.rc_context(STYLE):
        fig = draw(section)
        if fig is None:
            return False
        try:
            fig.savefig(path, dpi=DPI)
        finally:
            plt.close(fig)
    return True


def draw_section(key: str, section: SectionResult, out: Path) -> list[str]:
    """Every figure of the section ``key`` written into ``out``; one line for each figure that could not be drawn
    (a plot that fails must not cost the report: the caller writes these lines into it)."""
    problems = []
    for name, draw in FIGURES.get(key, {}).items():
        try:
            render(draw, section, out / name)
        except Exception as error:  # any failure of one figure is reported, the others still drawn
            plt.close("all")
            problems.append(f"plot {name} could not be drawn: {type(error).__name__}: {error}")
    return problems
