"""Section 4 (beyond the write-ups): many small fits at once.

B independent series share x = linspace(0, 5, N) (y_b = sin x with a per-series phase and noise), degree 4, lr 1e-5,
zeros init, float32, the loss of every series recorded every step. Reported per (series x step); every row must end
at the same mean final MSE as batched NumPy (one matmul for all series per step). ``fit_poly batched (...)`` rows step
on the data; ``fit_poly batched, gram (...)`` rows on the sufficient statistics (one shared A for all series).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import pykernels
from pykernels import reference

from ._common import (
    SectionResult,
    Skipped,
    Stopwatch,
    busy_note,
    include_row,
    median,
    rows_progress,
    run_isolated,
)

MSE_RTOL = 1e-3


@dataclass
class BatchedConfig:
    series: int = 1024
    samples: int = 100
    degree: int = 4
    steps: int = 2000
    lr: float = 1e-5
    devices: tuple[str, ...] = ("cpu",)


def batched_data(config: BatchedConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    x = np.linspace(0, 5, config.samples).astype(np.float32)
    phase = rng.uniform(0, 0.5, (config.series, 1))
    y = (np.sin(x + phase) + 0.01 * rng.standard_normal((config.series, config.samples))).astype(np.float32)
    return x, y


def _numpy_rows(x, y, config):
    return reference.fit_poly_numpy(x, y, np.zeros(config.degree + 1, np.float32), config.lr, config.steps)


def _torch_manual(x, y, config, device):
    """Batched torch with the write-up's manual gradient: one bmm-shaped matmul pair per step."""
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    powers = xt[:, None] ** torch.arange(config.degree + 1, device=device, dtype=xt.dtype)  # (N, D+1)
    w = torch.zeros(y.shape[0], config.degree + 1, device=device)
    trace = torch.empty(y.shape[0], config.steps, device=device)
    scale = 2.0 / y.shape[1]
    for step in range(config.steps):
        residual = w @ powers.T - yt  # (B, N)
        trace[:, step] = (residual * residual).mean(dim=1)
        w -= config.lr * scale * (residual @ powers)
    return w, trace


TIMING_SECONDS, MAX_RUNS = 0.5, 5  # short rows run again until half a second has passed (at most 5 runs): the median


def run_row(name: str, device: str, config: BatchedConfig, progress) -> dict:
    x, y = batched_data(config)
    if name == "numpy batched (matmul)":

        def fit(steps):
            return _numpy_rows(x, y, BatchedConfig(**{**config.__dict__, "steps": steps}))[1]

    elif name.startswith("torch batched"):

        def fit(steps):
            return _torch_manual(x, y, BatchedConfig(**{**config.__dict__, "steps": steps}), device)[1]

    else:
        backend = "numba" if "numba" in name else "cpp"
        method = "gram" if "gram" in name else "data"  # the data rows keep their names: asv tracks them by name
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

        def fit(steps):
            return pykernels.fit_poly(xt, yt, config.degree, lr=config.lr, steps=steps, method=method, backend=backend)[
                1
            ]

    fit(config.steps)  # warm-up at full size: numba compiles the variant this size takes (parallel or not)
    seconds, trace = [], None
    while not seconds or (sum(seconds) < TIMING_SECONDS and len(seconds) < MAX_RUNS):
        trace = None  # the last run's output freed first, as a loop of fits frees it: its memory is reused
        watch = Stopwatch(device)
        with watch.timed():
            trace = fit(config.steps)
        seconds.append(watch.seconds)
    progress(1.0)
    trace = np.asarray(trace.cpu() if isinstance(trace, torch.Tensor) else trace, dtype=np.float64)
    return {
        "name": name,
        "device": device,
        "seconds": median(seconds),
        "seconds_all": seconds,
        "ns_per_series_step": median(seconds) / (config.series * config.steps) * 1e9,
        "mean_final_mse": float(trace[:, -1].mean()),
    }


ROWS = (  # (name, device), in the table's order
    ("numpy batched (matmul)", "cpu"),
    ("torch batched, manual gradient", "cpu"),
    ("torch batched, manual gradient-gpu", "cuda"),
    ("fit_poly batched (cpp)", "cpu"),
    ("fit_poly batched (numba)", "cpu"),
    ("fit_poly batched (cpp)-gpu", "cuda"),
    ("fit_poly batched, gram (cpp)", "cpu"),
    ("fit_poly batched, gram (numba)", "cpu"),
    ("fit_poly batched, gram (cpp)-gpu", "cuda"),
)


def run(config: BatchedConfig) -> SectionResult:
    section = SectionResult("Batched fits")
    plan = []
    for name, device in ROWS:
        if include_row(section, name, device, config.devices):
            plan.append((name, device))
    with rows_progress("batched fits", len(plan)) as progress:
        for name, device in plan:
            progress.set_postfix_str(name)
            try:
                section.rows.append(run_isolated(run_row, (name, device, config), progress.update))
            except RuntimeError as error:  # e.g. no CUDA kernels for fit_poly: listed, not fatal
                section.skipped.append(Skipped(name, str(error).splitlines()[-1][:200]))
    base = section.rows[0] if section.rows else None  # batched NumPy, unless it did not run
    section.extra["reference_row"] = base["name"] if base else None
    for row in section.rows:
        row["speedup"] = base["seconds"] / row["seconds"]
        row["converged_same"] = bool(
            abs(row["mean_final_mse"] - base["mean_final_mse"]) <= MSE_RTOL * abs(base["mean_final_mse"])
        )
    section.extra["config"] = dict(config.__dict__)
    describe(section)
    return section


def describe(section: SectionResult) -> None:
    """The section's title and notes, from its rows and config (a saved run's report is written again with today's
    words)."""
    config = section.extra["config"]
    section.title = f"Batched fits: {config['series']} series x {config['samples']} points (beyond the write-ups)"
    flagged = [f"`{r['name']}`" for r in section.rows if not r["converged_same"]]
    notes = []
    if flagged:
        notes.append(
            f"FLAGGED: {', '.join(flagged)} did not reach the `{section.extra['reference_row']}` row's mean final MSE "
            f"within {MSE_RTOL:.1%}"
        )
    section.notes = notes + [note for note in (busy_note(section.rows),) if note]
