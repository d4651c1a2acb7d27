"""The one-command GPU check, for the day a GPU is lent: build, test and benchmark the CUDA half, and write
everything to one folder.

    python3 .ci/gpu_check.py --out DIR              # on the GPU machine, from the repository root (~8 minutes)
    python3 .ci/gpu_check.py --out DIR --dry-run    # here, without a GPU: every step that needs none (the CUDA
                                                    # half's build included: it needs nvcc and a CUDA torch)

Steps, each timed and logged to DIR/steps.md:
1. environment: GPU, driver, torch, CUDA, nvcc, numba (environment.json);
2. build: ``pip install --no-build-isolation --no-deps -e .`` against the torch it finds (TORCH_CUDA_ARCH_LIST 9.0,
   MAX_JOBS = the cores);
3. tests: the CUDA tests (every test with a CUDA parameter, tests/test_cuda.py) and the numba-CUDA tests on the
   device (pytest.log, the summary line in steps.md);
4. benchmarks (gpu_benchmarks.md / .json): dot and poly_mse on 10^8 float32 against a device-to-device copy timed in
   the same run (goal >= 85% of its bandwidth), linear_sgd_step's passes,
   and batched fits of 1024 and 65536 series (fit_poly on the data and on its statistics, batched torch);
5. the study on the GPU rows (--device cuda, 20,000 seed-fit steps to fit the lease): the seed fit's loops
   (torch-gpu, torch-autograd-gpu, pykernels, the CUDA-graph loop, fit_poly), the 10^7-weight epoch (torch autograd,
   Dot, linear_sgd_step, linear_sgd_philox), batched fits; the goals read off this run's numbers into goals.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_TEST_FILTER = "cuda or test_cuda"


class Log:
    """steps.md: one line a step, with its time and outcome; command output to per-step log files."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.lines = ["| step | seconds | outcome |", "|---|---|---|"]
        self.start = time.perf_counter()

    def run(self, step: str, command: list[str], log_name: str, timeout: float, env: dict | None = None) -> str:
        begin = time.perf_counter()
        with open(self.out / log_name, "w") as log:
            log.write("$ " + shlex.join(command) + "\n")
            log.flush()
            try:
                result = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT, env=env
                )
                outcome = "ok" if result.returncode == 0 else f"exit {result.returncode}"
            except subprocess.TimeoutExpired:
                outcome = f"timed out after {timeout:.0f} s"
        self.record(step, time.perf_counter() - begin, outcome)
        return outcome

    def record(self, step: str, seconds: float, outcome: str) -> None:
        self.lines.append(f"| {step} | {seconds:.1f} | {outcome} |")
        print(f"gpu_check: {step}: {outcome} ({seconds:.1f} s)", flush=True)
        self.write()

    def write(self) -> None:
        total = f"\ntotal: {time.perf_counter() - self.start:.0f} s\n"
        (self.out / "steps.md").write_text("\n".join(self.lines) + "\n" + total)


def environment() -> dict:
    import torch

    def command_output(*command: str) -> str | None:
        if shutil.which(command[0]) is None:
            return None
        result = subprocess.run(command, capture_output=True, text=True)
        return (result.stdout + result.stderr).strip()

    return {
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "nvidia_smi": command_output(
            "nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"
        ),
        "nvcc": command_output("nvcc", "--version"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numba": command_output(sys.executable, "-c", "import numba; print(numba.__version__)"),
        "numba_cuda": command_output(sys.executable, "-c", "import numba_cuda; print(numba_cuda.__version__)"),
    }


# --- the benchmarks (run in a child process, after the build) -------------------------------------------------


def _median_ms(fn, device: str, repeat: int = 20, warmup: int = 3) -> float:
    """Median of fn's timings after a warm-up: CUDA events on the GPU, the clock on the CPU (the dry run)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return sorted(times)[len(times) // 2]


def benchmarks(n: int, device: str, batched_steps: int) -> dict:
    """GB/s of the bandwidth-bound ops on n float32 against a device-to-device copy, timed in the same run."""
    import torch

    import pykernels

    x = torch.rand(n, device=device)
    y = torch.rand(n, device=device)
    coeffs = torch.rand(5, device=device)
    copy_target = torch.empty_like(x)
    w, b = torch.zeros(n, device=device), torch.zeros(1, device=device)
    target = torch.tensor(1.0, device=device)
    bytes_moved = {  # each input read once, each output written once
        "copy (device to device)": 8 * n,
        "dot (cpp)": 8 * n,
        "poly_mse (cpp)": 8 * n,
        "dot (numba)": 8 * n,
        "poly_mse (numba)": 8 * n,
        "torch.dot": 8 * n,
        "linear_sgd_step (cpp), two passes": 4 * n * 5,  # pass 1 reads w, x; pass 2 reads w, x, writes w
    }
    runs = {
        "copy (device to device)": lambda: copy_target.copy_(x),
        "dot (cpp)": lambda: pykernels.dot(x, y),
        "poly_mse (cpp)": lambda: pykernels.poly_mse(x, y, coeffs),
        "dot (numba)": lambda: pykernels.dot(x, y, backend="numba"),
        "poly_mse (numba)": lambda: pykernels.poly_mse(x, y, coeffs, backend="numba"),
        "torch.dot": lambda: torch.dot(x, y),
        "linear_sgd_step (cpp), two passes": lambda: pykernels.linear_sgd_step(w, b, x, target, 1e-9),
    }
    rows = {}
    for name, fn in runs.items():
        try:
            ms = _median_ms(fn, device)
            rows[name] = {"ms": ms, "GB/s": bytes_moved[name] / ms / 1e6}
        except Exception as error:  # a failing row is reported, the others still run
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
    copy = rows["copy (device to device)"].get("GB/s")
    for row in rows.values():
        if copy and "GB/s" in row:
            row["vs copy"] = row["GB/s"] / copy
    return {"n": n, "dtype": "float32", "device": device, "rows": rows, "batched": batched_fits(device, batched_steps)}


def batched_fits(device: str, steps: int, samples: int = 100, degree: int = 4) -> dict:
    """ns per series x step of batched fits (the study's batched problem) on the GPU: fit_poly and batched torch
    with the write-up's manual gradient, for 1024 and 65536 series."""
    import torch

    import pykernels

    x = torch.linspace(0, 5, samples, device=device)
    powers = x[:, None] ** torch.arange(degree + 1, device=device, dtype=x.dtype)
    result = {}
    for series in (1024, 65536):
        y = torch.sin(x + torch.linspace(0, 0.5, series, device=device)[:, None])

        def torch_manual(y=y):
            w = torch.zeros(y.shape[0], degree + 1, device=device)
            for _ in range(steps):
                residual = w @ powers.T - y
                w -= 1e-5 * 2.0 / samples * (residual @ powers)

        runs = {
            "fit_poly (cpp)": lambda y=y: pykernels.fit_poly(x, y, degree, lr=1e-5, steps=steps, method="data"),
            "fit_poly, gram (cpp)": lambda y=y: pykernels.fit_poly(x, y, degree, lr=1e-5, steps=steps, method="gram"),
            "torch batched, manual gradient": torch_manual,
        }
        for name, fn in runs.items():
            try:
                ms = _median_ms(fn, device, repeat=3, warmup=1)
                result[f"{name}, {series} series"] = {"ns_per_series_step": ms * 1e6 / (series * steps)}
            except Exception as error:
                result[f"{name}, {series} series"] = {"error": f"{type(error).__name__}: {error}"}
    return result


def benchmarks_markdown(result: dict) -> str:
    lines = [
        f"N = {result['n']:,} {result['dtype']} on {result['device']}; median of 20 timings (CUDA events on the GPU); "
        "bytes: each input read once, each output written once.",
        "",
        "| op | ms | GB/s | vs copy |",
        "|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        if "error" in row:
            lines.append(f"| {name} | {row['error']} | | |")
        else:
            lines.append(f"| {name} | {row['ms']:.3f} | {row['GB/s']:.0f} | {row.get('vs copy', 0):.0%} |")
    lines += ["", "Batched fits, N = 100, degree 4:", "", "| row | ns per series x step |", "|---|---|"]
    for name, row in result["batched"].items():
        lines.append(f"| {name} | {row.get('error') or format(row['ns_per_series_step'], '.3f')} |")
    return "\n".join(lines) + "\n"


def goals(study_json: Path, bench: dict | None) -> str:
    """The GPU issue's goals, read off this run's numbers."""
    lines = ["| goal | measured | met |", "|---|---|---|"]
    if bench:
        for op in ("dot (cpp)", "poly_mse (cpp)"):
            share = bench["rows"].get(op, {}).get("vs copy")
            if share is not None:
                lines.append(f"| {op} on 10^8 float32 >= 85% of the copy's GB/s | {share:.0%} | {share >= 0.85} |")
        for name, row in bench["batched"].items():
            if "ns_per_series_step" in row:
                lines.append(f"| batched: {name} | {row['ns_per_series_step']:.3f} ns per series x step | |")
    if study_json.exists():
        sections = json.loads(study_json.read_text())["sections"]
        poly = {r["name"]: r for r in sections.get("poly", {}).get("rows", [])}
        graph, autograd = poly.get("manual poly_mse step, CUDA graph (cpp)-gpu"), poly.get("torch-autograd-gpu")
        if graph and autograd:
            ratio = autograd["us_per_step"] / graph["us_per_step"]
            lines.append(f"| seed fit: CUDA-graph loop >= 10x torch-autograd-gpu | {ratio:.1f}x | {ratio >= 10} |")
        for name, row in poly.items():
            if name.endswith("-gpu"):
                lines.append(f"| seed fit: {name} | {row['us_per_step']:.2f} µs/step | |")
        for row in sections.get("large", {}).get("rows", []):
            if row["name"].endswith("-gpu"):
                speedup = row.get("epoch_speedup_vs_autograd")
                met = "" if not row["name"].startswith("pykernels dot") else str(speedup is not None and speedup >= 2)
                lines.append(
                    f"| 10^7 epoch (lr {row.get('lr')}): {row['name']} | {row['epoch_ms']:.2f} ms, "
                    f"{speedup or 1:.1f}x autograd | {met} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, test and benchmark pykernels' CUDA half on this GPU.")
    parser.add_argument("--out", type=Path, required=True, help="folder for everything this writes")
    parser.add_argument("--dry-run", action="store_true", help="skip what needs a GPU (to rehearse without one)")
    parser.add_argument("--steps", type=int, default=20_000, help="seed-fit steps of the study's GPU rows")
    parser.add_argument("--n", type=int, default=100_000_000, help="elements of the bandwidth benchmarks")
    parser.add_argument("--no-build", action="store_true", help="use the extension as built")
    parser.add_argument("--benchmarks-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.benchmarks_only:  # the child process of step 4 (on the CPU, small, in the dry run: the code path only)
        device = "cpu" if args.dry_run else "cuda"
        result = benchmarks(args.n, device, batched_steps=20 if args.dry_run else 2000)
        (args.out / "gpu_benchmarks.json").write_text(json.dumps(result, indent=1))
        (args.out / "gpu_benchmarks.md").write_text(benchmarks_markdown(result))
        print(benchmarks_markdown(result))
        return 0

    import torch

    log = Log(args.out)
    gpu = torch.cuda.is_available()
    if not gpu and not args.dry_run:
        print("gpu_check: no GPU visible (use --dry-run to rehearse without one)", file=sys.stderr)
        return 1
    begin = time.perf_counter()
    (args.out / "environment.json").write_text(json.dumps(environment(), indent=1))
    log.record("environment", time.perf_counter() - begin, "ok")

    # The same build with or without a GPU: the dry run compiles and links exactly what the GPU machine will.
    env = {**os.environ, "MAX_JOBS": str(os.cpu_count() or 1), "PYTHONUNBUFFERED": "1"}
    env.update(PYKERNELS_CUDA="1", TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"))
    if args.no_build:
        log.record("build", 0.0, "skipped (--no-build)")
    else:
        build = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]
        log.run("build", build, "build.log", timeout=1800, env=env)  # (2 cores: CI's dry run)

    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", CUDA_TEST_FILTER, "-rs"]
    log.run("CUDA tests" + (" (they skip without a GPU)" if not gpu else ""), pytest, "pytest.log", 600, env)
    summary = (args.out / "pytest.log").read_text().strip().splitlines()[-1:]
    log.lines.append(f"| pytest summary | | {summary[0] if summary else 'none'} |")

    bench = None
    command = [sys.executable, __file__, "--out", str(args.out), "--benchmarks-only"]
    command += ["--n", str(args.n)] if gpu else ["--n", "1000000", "--dry-run"]
    label = "benchmarks" if gpu else "benchmarks (CPU, 10^6, few steps: the code path only)"
    if log.run(label, command, "gpu_benchmarks.log", timeout=300, env=env) == "ok" and gpu:
        bench = json.loads((args.out / "gpu_benchmarks.json").read_text())

    study_out = args.out / "study"
    study = [sys.executable, "-m", "pykernels.study", "--out", str(study_out), "--only", "poly", "large", "batched"]
    study += ["--device", "cuda", "--steps", str(args.steps)] if gpu else ["--device", "cpu", "--quick"]
    log.run("study" + ("" if gpu else " (--quick, CPU rows: the pipeline only)"), study, "study.log", 600, env)
    (args.out / "goals.md").write_text(goals(study_out / "results.json", bench))
    log.record("goals", 0.0, "written" + ("" if gpu else " (no GPU figures)"))
    log.write()
    print((args.out / "steps.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
