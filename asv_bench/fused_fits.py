"""The fused fits side by side: source trees measured in turn, in one run, on the rows issue 27 names.

    python asv_bench/fused_fits.py                        # this checkout
    python asv_bench/fused_fits.py --tree OLD --tree NEW  # two checkouts (each built in place), before and after

Each round runs every tree once, in a fresh interpreter (``PYTHONPATH`` = the tree), in turn; a row's figure is
its best over the rounds (the machine's noise only adds time). Printed: the load before and after, then per row
and tree the time (ns per step, or per series-step for batched fits) and the minor page faults per call. Rows:

- the seed fit (the polynomial write-up's x = linspace(0, 5, 100), y = sin x, degree 4, lr 1e-5, 200,000 steps,
  every loss recorded), float64 and float32 data: ``method="auto"`` (the default), ``"gram"``, ``"data"``;
- the hand-written fastmath numba loop on the same fit (float32, one thread): the data pass's yardstick;
- 1,024 batched fits x 2,000 steps (x shared, y = sin x + noise), both dtypes: ``"auto"`` and ``"gram"``, each
  result freed before the next call (its memory reused); and ``"gram"`` with every result kept (a fresh trace per
  call, its page faults counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SEED_STEPS = 200_000
BATCH, BATCH_STEPS = 1024, 2000


def _measure() -> dict[str, dict[str, float]]:
    """This interpreter's rows: {row: {"ns": time per step or series-step, "faults": minor page faults per call}}."""
    import resource

    import numpy as np
    import torch

    import pykernels

    def best(call, repeat: int, keep: bool = False) -> tuple[float, float]:
        """Best time and median minor page faults per call; ``keep``: every result kept (each call's outputs are
        fresh memory), else freed before the next call (their memory reused, as in a loop that keeps nothing)."""
        call()
        times, faults, kept = [], [], []
        for _ in range(repeat):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            result = call()
            times.append(time.perf_counter() - start)
            if keep:
                kept.append(result)
            del result
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return min(times), float(np.median(faults))

    rows: dict[str, dict[str, float]] = {}
    x64 = torch.linspace(0, 5, 100, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        x, y = x64.to(dtype), torch.sin(x64).to(dtype)
        for method in ("auto", "gram", "data"):
            seconds, faults = best(
                lambda x=x, y=y, method=method: pykernels.fit_poly(x, y, 4, lr=1e-5, steps=SEED_STEPS, method=method),
                repeat=5 if method == "data" else 30,
            )
            rows[f"seed fit, {name}, method={method}"] = {"ns": seconds / SEED_STEPS * 1e9, "faults": faults}
    from pykernels.study._yardstick import fit_degree4_fastmath

    x32, y32 = x64.float().numpy(), torch.sin(x64).float().numpy()
    trace = np.empty(SEED_STEPS, np.float32)
    seconds, _ = best(lambda: fit_degree4_fastmath(x32, y32, np.zeros(5, np.float32), np.float32(1e-5), trace), 5)
    rows["seed fit, float32, fastmath numba loop (1 thread)"] = {"ns": seconds / SEED_STEPS * 1e9, "faults": 0.0}
    generator = torch.Generator().manual_seed(0)
    xb = torch.linspace(0, 2, 100, dtype=torch.float64)
    yb = torch.sin(xb) + 0.1 * torch.randn(BATCH, 100, generator=generator, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        x, y = xb.to(dtype), yb.to(dtype)
        for method, keep in (("auto", False), ("gram", False), ("gram", True)):
            seconds, faults = best(
                lambda x=x, y=y, method=method: pykernels.fit_poly(x, y, 4, lr=1e-3, steps=BATCH_STEPS, method=method),
                20,
                keep,
            )
            kept = ", every result kept" if keep else ""
            rows[f"batched {BATCH} x {BATCH_STEPS}, {name}, method={method}{kept}"] = {
                "ns": seconds / (BATCH * BATCH_STEPS) * 1e9,
                "faults": faults,
            }
    return rows


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a source tree built in place (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure()))
        return
    trees = args.tree or [Path(__file__).resolve().parent.parent]
    best: dict[Path, dict[str, dict[str, float]]] = {tree: {} for tree in trees}
    print(f"load average before: {_load()}; {os.cpu_count()} CPUs; {args.rounds} rounds")
    for _ in range(args.rounds):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            out = subprocess.run(
                [sys.executable, __file__, "--measure"], env=env, check=True, capture_output=True, text=True
            )
            for row, figures in json.loads(out.stdout).items():
                kept = best[tree].setdefault(row, figures)
                if figures["ns"] < kept["ns"]:
                    best[tree][row] = figures
    print(f"load average after: {_load()}")
    header = " | ".join(f"{tree.name}: ns | faults/call" for tree in trees)
    print(f"| row | {header} |")
    print("|---" * (1 + 2 * len(trees)) + "|")
    for row in best[trees[0]]:
        cells = " | ".join(f"{best[t][row]['ns']:.2f} | {best[t][row]['faults']:.0f}" for t in trees if row in best[t])
        print(f"| {row} | {cells} |")


if __name__ == "__main__":
    main()
