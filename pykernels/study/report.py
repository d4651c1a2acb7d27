"""The study's outputs: report.md (tables, machine, command), results.json and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import plots
from ._common import BUSY_CPUS, SectionResult, Skipped, load_cell, mse_reference_row
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

{_conditioning(section, mse_reference_row(section))}
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


def write(out: Path, sections: dict[str, SectionResult], machine: dict, command: str, settings: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for key, section in sections.items():
        if section.rows and key in plots.PLOTS:
            plots.PLOTS[key](section, out)
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


@dataclass
class SavedRun:
    """What a results.json holds: enough to write its report and plots again."""

    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    sections: dict[str, SectionResult]


def read_results(path: Path) -> SavedRun:
    """The run a results.json (written by :func:`write`) records, its sections rebuilt as :class:`SectionResult`."""
    payload = _from_jsonable(json.loads(Path(path).read_text()))
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
