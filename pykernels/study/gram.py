"""Section 5 (beyond the write-ups): fits whose step cost does not grow with the data.

For a model linear in its coefficients the MSE gradient needs only the sufficient statistics A = VᵀV/N, b = Vᵀy/N,
s = yᵀy/N (one float64 pass over the data), after which every step costs (D+1)^2 whatever N is
(``fit_poly(method="gram")``). Three measurements:

- many points: N points, S steps, the whole gram fit against S/1000 calls of ``poly_mse`` on the same data;
- the accuracy boundary: where ``method="auto"`` leaves the statistics for the data pass, and the error of both
  methods against exact gradient descent (the closed form in 80-digit arithmetic) on each side;
- sharded data: one fit of data split over 2 processes (gloo), the statistics all-reduced once, against data-parallel
  training (DistributedDataParallel, a gradient all-reduce per step): collectives issued and seconds.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import pykernels

from ._common import SectionResult, Stopwatch, busy_note, median, rows_progress, run_isolated

BOUNDARY_CASES = [(-1, 1, 2), (-1, 1, 6), (-1, 1, 10), (0, 5, 4), (1, 2, 6), (100, 101, 3)]
BOUNDARY_POINTS = 200
MANY_POINTS_LR = 0.1  # the many-points fit: well below its largest stable lr, 1/λmax(A) ≈ 0.85 (degree 4 on [-1, 1])


@dataclass
class GramConfig:
    points: int = 1_000_000
    steps: int = 20_000
    boundary_steps: tuple[int, ...] = (20_000, 1_000_000)
    sharded_points: int = 100_000
    sharded_steps: int = 2_000
    repeat: int = 3


# --- many points ------------------------------------------------------------------------------------------------


def many_points_row(name: str, config: GramConfig, progress) -> dict:
    """One timed workload on N = config.points points of sin(3x) on [-1, 1], float32, degree 4."""
    x = torch.linspace(-1, 1, config.points)
    y = torch.sin(3 * x)
    backend = "numba" if "numba" in name else "cpp"
    calls = config.steps // 1000
    coeffs = torch.zeros(5)
    if name.startswith("poly_mse"):

        def work():
            for _ in range(calls):
                pykernels.poly_mse(x, y, coeffs, backend=backend)

    elif name.startswith("poly_moments"):

        def work():
            pykernels.poly_moments(x, y, 4, backend=backend)

    else:

        def work():
            return pykernels.fit_poly(x, y, 4, lr=MANY_POINTS_LR, steps=config.steps, method="gram", backend=backend)

    work()  # warm-up: numba compiles, caches warm
    seconds = []
    for _ in range(config.repeat):
        watch = Stopwatch()
        with watch.timed():
            work()
        seconds.append(watch.seconds)
    progress(1.0)
    return {"name": name, "seconds": median(seconds), "seconds_all": seconds}


# --- the accuracy boundary --------------------------------------------------------------------------------------


def exact_gradient_descent(x: np.ndarray, y: np.ndarray, degree: int, lr: float, steps: int) -> np.ndarray:
    """c_T of gradient descent from zeros on the MSE of the float64 points, exactly (80-digit arithmetic):
    c_T = sum_i q_i q_i^T b (1 - (1 - 2 lr lambda_i)^T) / lambda_i over the eigenpairs of A."""
    import mpmath

    with mpmath.workdps(80):
        xs, ys = [mpmath.mpf(float(v)) for v in x], [mpmath.mpf(float(v)) for v in y]
        n = len(xs)
        moments = [sum(v**p for v in xs) / n for p in range(2 * degree + 1)]
        gram = mpmath.matrix([[moments[j + k] for k in range(degree + 1)] for j in range(degree + 1)])
        target = mpmath.matrix([sum(w * v**k for v, w in zip(xs, ys, strict=True)) / n for k in range(degree + 1)])
        eigenvalues, vectors = mpmath.eigsy(gram)
        coeffs = mpmath.matrix(degree + 1, 1)
        rate = 2 * mpmath.mpf(lr)
        for i in range(degree + 1):
            q = vectors[:, i]
            projection = (q.T * target)[0]
            coeffs += q * (projection * (1 - (1 - rate * eigenvalues[i]) ** steps) / eigenvalues[i])
        return np.array([float(c) for c in coeffs])


def boundary_row(case: tuple[int, int, int], config: GramConfig, progress) -> dict:
    low, high, degree = case
    x = torch.linspace(low, high, BOUNDARY_POINTS, dtype=torch.float64)
    y = torch.sin(3 * (x - low) / (high - low))
    moments = pykernels.poly_moments(x, y, degree)
    eigenvalues = np.linalg.eigvalsh(pykernels.reference.gram_system_torch(*moments)[0].numpy())
    lr = 0.45 / eigenvalues[-1]
    results = []
    for steps in config.boundary_steps:
        exact = exact_gradient_descent(x.numpy(), y.numpy(), degree, lr, steps)
        errors = {}
        for method in ("gram", "data"):
            fit = pykernels.fit_poly(x, y, degree, lr=lr, steps=steps, record_every=steps, method=method)
            errors[method] = float(np.linalg.norm(fit.coeffs.numpy() - exact) / np.linalg.norm(exact))
        results.append(
            {
                "steps": steps,
                "bound": pykernels.ops.gram_error_bound(moments, lr=lr, steps=steps),
                "auto": pykernels.choose_fit_method(moments, lr=lr, steps=steps, dtype=torch.float64),
                "auto_float32": pykernels.choose_fit_method(moments, lr=lr, steps=steps, dtype=torch.float32),
                "gram_error": errors["gram"],
                "data_error": errors["data"],
            }
        )
        progress(1.0 / len(config.boundary_steps))
    return {
        "name": f"degree {degree} on [{low}, {high}]",
        "degree": degree,
        "x_range": [low, high],
        # past 1/eps float64 cannot resolve the smallest eigenvalue: None, printed as such
        "condition": float(eigenvalues[-1] / eigenvalues[0]) if eigenvalues[0] > 1e-15 * eigenvalues[-1] else None,
        "lr": float(lr),
        "results": results,
    }


# --- sharded data -----------------------------------------------------------------------------------------------


CPU = torch.profiler.ProfilerActivity.CPU


def _train_sharded(method: str, shard: tuple[torch.Tensor, torch.Tensor], steps: int):
    """(coefficients or None, last loss) of one sharded fit: the statistics' route, or DDP's step per step."""
    from pykernels import distributed

    if method == "gram":
        fit = distributed.fit_poly_distributed(*shard, 4, lr=0.5, steps=steps)
        return fit.coeffs, fit.trace[-1].item()
    return None, distributed.train_ddp(*shard, 4, 0.5, steps)[-1]


@contextmanager
def _stderr_without(prefix: str) -> Iterator[None]:
    """File descriptor 2 (standard error as C++ writes it), less the lines that start with ``prefix``: torch's
    profiler prints a "USDT: ... profiler_start" line from C++ every time it starts and stops, into the study's
    progress bars. Where fd 2 is closed there is nothing to filter."""
    _flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # fd 2 closed
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured if not line.startswith(prefix.encode()))
            if kept:
                os.write(2, kept)


def _flush_stderr() -> None:
    """Python's buffered standard error written out (it may be None, or not a file: pytest's capture, a StringIO)."""
    flush = getattr(sys.stderr, "flush", None)
    if flush is not None:
        flush()


def _rank_main(rank: int, world: int, init_file: str, out_dir: str, points: int, steps: int) -> None:
    import torch.distributed as dist

    from pykernels import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y = distributed.demo_data(points)
        shard = (x[rank::world], y[rank::world])
        report = {}
        for method in ("gram", "ddp"):
            # timed without the profiler (it slows every op DDP issues), then profiled alone to count collectives
            dist.barrier()
            start = time.perf_counter()
            coeffs, last_loss = _train_sharded(method, shard, steps)
            seconds = time.perf_counter() - start
            dist.barrier()
            with _stderr_without("USDT:"), torch.profiler.profile(activities=[CPU]) as profile:
                _train_sharded(method, shard, steps)
            collectives: dict[str, int] = {}
            for event in profile.events():
                if event.name.startswith("gloo:"):
                    collectives[event.name] = collectives.get(event.name, 0) + 1
            report[method] = {"seconds": seconds, "collectives": collectives, "last_loss": last_loss}
            if coeffs is not None:
                report[method]["coeffs"] = coeffs.tolist()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def sharded_rows(config: GramConfig, progress) -> dict:
    """Both routes on 2 gloo processes (one thread each), every other point on each rank; the gram fit's
    coefficients against one process's gram fit of all the points."""
    import torch.multiprocessing as mp

    from pykernels import distributed

    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(
            _rank_main,
            args=(2, str(Path(folder) / "init"), folder, config.sharded_points, config.sharded_steps),
            nprocs=2,
            start_method="spawn",
        )
        ranks = [json.loads(Path(folder, f"rank{r}.json").read_text()) for r in range(2)]
    x, y = distributed.demo_data(config.sharded_points)
    single = pykernels.fit_poly(x, y, 4, lr=0.5, steps=config.sharded_steps, method="gram")
    rows = []
    for method, name in (("gram", "fit_poly_distributed (statistics all-reduced once)"), ("ddp", "train_ddp (DDP)")):
        row = {
            "name": name,
            "seconds": max(r[method]["seconds"] for r in ranks),
            "collectives": ranks[0][method]["collectives"],
            "last_loss": ranks[0][method]["last_loss"],
        }
        if method == "gram":
            row["coeffs_vs_one_process"] = max(
                float((torch.tensor(r["gram"]["coeffs"], dtype=torch.float64) - single.coeffs).abs().max())
                for r in ranks
            )
        rows.append(row)
    progress(1.0)
    return {"name": "sharded", "rows": rows, "one_process_last_loss": float(single.trace[-1])}


def run(config: GramConfig) -> SectionResult:
    section = SectionResult("Fits on sufficient statistics")
    many = [
        f"poly_mse x{config.steps // 1000} (cpp)",
        "poly_moments (cpp)",
        f"fit_poly (gram), {config.steps:,} steps (cpp)",
        f"poly_mse x{config.steps // 1000} (numba)",
        "poly_moments (numba)",
        f"fit_poly (gram), {config.steps:,} steps (numba)",
    ]
    with rows_progress("statistics", len(many) + len(BOUNDARY_CASES) + 1) as progress:
        for name in many:
            progress.set_postfix_str(name)
            section.rows.append({"kind": "many", **run_isolated(many_points_row, (name, config), progress.update)})
        for case in BOUNDARY_CASES:
            progress.set_postfix_str(f"boundary {case}")
            boundary = run_isolated(boundary_row, (case, config), progress.update)
            boundary.pop("load")  # errors, not times: the machine's load says nothing about them (nor is it shown)
            section.rows.append({"kind": "boundary", **boundary})
        progress.set_postfix_str("sharded")
        sharded = run_isolated(sharded_rows, (config,), progress.update)
    section.extra["sharded"] = sharded
    section.extra["config"] = dict(config.__dict__)
    for backend in ("cpp", "numba"):
        calls = next(r for r in section.rows if r["name"] == f"poly_mse x{config.steps // 1000} ({backend})")
        fit = next(r for r in section.rows if r["name"] == f"fit_poly (gram), {config.steps:,} steps ({backend})")
        fit["vs_poly_mse_calls"] = fit["seconds"] / calls["seconds"]
    describe(section)
    return section


def describe(section: SectionResult) -> None:
    """The section's title and notes, from its rows (a saved run's report is written again with today's words)."""
    section.title = "Fits on sufficient statistics (beyond the write-ups)"
    section.notes = [note for note in (busy_note([r for r in section.rows if "load" in r]),) if note]
