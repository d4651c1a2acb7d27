"""Section 6: the machine's limits, measured in the same run, and how close each fused row comes to its own.

A row's limit is the time the machine needs for the arithmetic or the memory traffic the problem itself asks for,
at the rate this machine reaches in the same run:

- **arithmetic** (the fits, ``poly_mse``): the multiply-adds of the stepwise recurrence (the data pass: ``N (2D+3)``
  per step in the data's dtype; the statistics: ``(D+1)^2 + 3 (D+1)`` float64 per step, and ``N (3D+3)`` for their
  pass) at the machine's FMA rate, measured as GEMM (``torch.mm``, all threads) in that dtype;
- **memory** (the large problem's SGD on a stored sample: ``dot``, ``linear_sgd_step``): the two passes an exact
  SGD step needs (read w and x, 8 bytes per float32 weight; read them again and write w, 12 bytes) at the rates
  this machine reaches for such passes over arrays of the problem's size (w and x: 2 x 40 MB at n = 10^7, which
  the cache of a machine with a large L3 may hold): ``torch.dot(w, x)`` for the first, ``w.add_(x, alpha=...)``
  for the second;
- **the generator** (``linear_sgd_philox``): the samples drawn in the kernel at the Philox generator's rate
  (``philox_normal_`` into a buffer that stays in L2), or their memory traffic, whichever takes longer.

The fraction is the limit's time over the row's: 1 is the machine's limit; 0.01 is 100x from it. A method that
does less work than the recurrence (the statistics' 16-step jumps share products across steps) can pass 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._common import SectionResult, busy_note, plain


@dataclass
class LimitsConfig:
    gemm_size: int = 1536
    stream_elements: int = 10_000_000  # the large problem's n: its passes' working set
    philox_normals: int = 1 << 18
    repeat: int = 5


def _best_seconds(call: Callable[[], object], repeat: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def measure(config: LimitsConfig) -> dict[str, float]:
    """The machine's rates: multiply-adds per second (float32 and float64 GEMM, all threads and one), bytes per
    second of the SGD's two kinds of pass over float32 arrays of ``stream_elements`` (``dot``: two read;
    ``update``: two read, one written; ``write``: one written), standard normals per second (Philox)."""
    rates: dict[str, float] = {"threads": torch.get_num_threads()}
    n = config.gemm_size
    for dtype in (torch.float32, torch.float64):
        a = torch.rand(n, n, dtype=dtype)
        b = torch.rand(n, n, dtype=dtype)
        out = torch.empty(n, n, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        rates[f"fma_{name}"] = n**3 / _best_seconds(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), config.repeat)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            seconds = _best_seconds(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), config.repeat)
        finally:
            torch.set_num_threads(threads)
        rates[f"fma_{name}_one_thread"] = n**3 / seconds
    rates.update(_pass_rates(config.stream_elements, config.repeat))
    buffer = torch.empty(config.philox_normals)
    rates["philox_normals"] = config.philox_normals / _best_seconds(
        lambda: torch.ops.pykernels.philox_normal_(buffer, 1234, 0), config.repeat
    )
    return rates


def _pass_rates(n: int, repeat: int) -> dict[str, float]:
    """Bytes per second of the SGD's kinds of pass over two float32 arrays of n."""
    w, x = torch.ones(n), torch.full((n,), 0.5)  # touched: their pages exist before the clock starts
    return {
        "dot_bytes": 8 * n / _best_seconds(lambda: torch.dot(w, x), repeat),
        "update_bytes": 12 * n / _best_seconds(lambda: w.add_(x, alpha=-1e-30), repeat),
        "write_bytes": 4 * n / _best_seconds(lambda: w.fill_(1.0), repeat),
    }


def _data_pass_fmas(points: int, degree: int) -> int:
    return points * (2 * degree + 3)


def _statistics_step_fmas(degree: int) -> int:
    """u = A c, the loss c.u - 2 c.b, the update: (D+1)^2 + 3 (D+1)."""
    return (degree + 1) ** 2 + 3 * (degree + 1)


def _statistics_fmas(points: int, degree: int, steps: int) -> int:
    return steps * _statistics_step_fmas(degree) + points * (3 * degree + 3)


# (section, row name, bound, work): work(config) is (amount, words): multiply-adds for the "fma_*" rates; for
# "memory" and "philox", (normals drawn, {rate: bytes moved at it})
Work = Callable[[dict[str, Any]], tuple[Any, str]]


def _poly_data(c: dict) -> tuple[int, str]:
    per_step = _data_pass_fmas(c["samples"], c["degree"])
    return c["steps"] * per_step, f"{plain(per_step)} float32 multiply-adds x {plain(c['steps'])} steps"


def _poly_statistics(c: dict) -> tuple[int, str]:
    amount = _statistics_fmas(c["samples"], c["degree"], c["steps"])
    per_step = _statistics_step_fmas(c["degree"])
    return amount, f"{per_step} float64 multiply-adds x {plain(c['steps'])} steps, and the data's pass"


def _batched_data(c: dict) -> tuple[int, str]:
    per_step = _data_pass_fmas(c["samples"], c["degree"])
    amount = c["series"] * c["steps"] * per_step
    return amount, f"{plain(per_step)} float32 multiply-adds x {plain(c['steps'])} steps x {c['series']} series"


def _batched_statistics(c: dict) -> tuple[int, str]:
    per_step = _statistics_step_fmas(c["degree"])
    amount = c["series"] * _statistics_fmas(c["samples"], c["degree"], c["steps"])
    return amount, f"{per_step} float64 multiply-adds x {plain(c['steps'])} steps x {c['series']} series"


# The large problem's work per epoch: (normals drawn, {rate: bytes moved at it}). An exact SGD step on a stored
# sample: pass 1 reads w and x (a dot pass), pass 2 reads them again and writes w (an update pass).
def _sgd_stored(c: dict) -> tuple[tuple[int, dict[str, int]], str]:
    n = c["n"]
    return (0, {"dot_bytes": 8 * n, "update_bytes": 12 * n}), f"8 + 12 bytes x {plain(n)} weights per epoch"


def _philox_kept(c: dict) -> tuple[tuple[int, dict[str, int]], str]:
    # drawn once and written to the buffer, then the two passes over w and the buffer
    n = c["n"]
    moved = {"write_bytes": 4 * n, "dot_bytes": 8 * n, "update_bytes": 12 * n}
    return (n, moved), f"{plain(n)} normals, 4 + 8 + 12 bytes x {plain(n)} weights per epoch"


def _philox_regenerated(c: dict) -> tuple[tuple[int, dict[str, int]], str]:
    # drawn in each of the two passes; only w is read (twice) and written
    n = c["n"]
    moved = {"dot_bytes": 4 * n, "update_bytes": 8 * n}
    return (2 * n, moved), f"{plain(2 * n)} normals, 4 + 8 bytes x {plain(n)} weights per epoch"


PHILOX_ROW = "pykernels linear_sgd_philox"
_PER_BACKEND = [  # rows the study runs once per backend ("{}": cpp, numba)
    ("poly", "manual poly_mse step ({})", "fma_float32", _poly_data),
    ("poly", "fit_poly, fused loop ({})", "fma_float32", _poly_data),
    ("poly", "fit_poly (gram), fused loop ({})", "fma_float64", _poly_statistics),
    ("batched", "fit_poly batched ({})", "fma_float32", _batched_data),
    ("batched", "fit_poly batched, gram ({})", "fma_float64", _batched_statistics),
]
MODELS: list[tuple[str, str, str, Work]] = [
    ("poly", "numba fastmath loop, degree 4 unrolled", "fma_float32", _poly_data),
    *((key, name.format(b), bound, work) for key, name, bound, work in _PER_BACKEND for b in ("cpp", "numba")),
    ("large", "pykernels dot+backward", "memory", _sgd_stored),
    ("large", "pykernels linear_sgd_step (fused)", "memory", _sgd_stored),
    ("large", f"{PHILOX_ROW} (sample in-kernel, kept for one pass)", "philox", _philox_kept),
    ("large", f"{PHILOX_ROW} (sample in-kernel, regenerated, never stored)", "philox", _philox_regenerated),
]

BOUND_WORDS = {
    "fma_float32": "float32 FMA rate",
    "fma_float64": "float64 FMA rate",
    "memory": "memory passes",
    "philox": "Philox rate, or memory passes",
}


def limit_seconds(bound: str, amount: Any, rates: dict[str, float]) -> float:
    """The time the machine needs for ``amount`` of work at the rate ``bound`` names (see MODELS)."""
    if bound in ("memory", "philox"):
        normals, moved = amount
        return max(normals / rates["philox_normals"], sum(size / rates[rate] for rate, size in moved.items()))
    return amount / rates[bound]


def _measured_seconds(section_key: str, row: dict) -> float:
    """The row's time for the work its model counts: the whole run; per epoch for the large problem (its training
    time; the in-kernel rows' epoch includes their sampling)."""
    if section_key == "large":
        return row["total_seconds" if row["sample_in_kernel"] else "training_seconds"] / row["epochs"]
    return row["seconds"]


def limit_rows(sections: dict[str, SectionResult], rates: dict[str, float]) -> list[dict[str, Any]]:
    """Per fused row that ran on the CPU: its bound, the work counted, the limit's time, its own, the fraction, and
    the machine's load while its time was measured (the row's own, where it has one)."""
    rows = []
    for key, name, bound, work in MODELS:
        section = sections.get(key)
        if section is None:
            continue
        for row in section.rows:
            if row["name"] != name or row.get("device", "cpu") != "cpu":
                continue
            amount, words = work(section.extra["config"])
            limit = limit_seconds(bound, amount, rates)
            seconds = _measured_seconds(key, row)
            label = f"{name}, lr {plain(row['lr'])}" if key == "large" else name
            rows.append(
                {
                    "name": label,
                    "section": key,
                    "bound": bound,
                    "work": words,
                    "limit_seconds": limit,
                    "seconds": seconds,
                    "fraction": limit / seconds if seconds > 0 else None,
                    **({"load": row["load"]} if "load" in row else {}),
                }
            )
    return rows


def run(config: LimitsConfig, sections: dict[str, SectionResult]) -> SectionResult:
    """The machine's rates, then the rows of the sections already run, against them."""
    section = SectionResult("How far each fused row is from this machine's limit")
    rates = measure(config)
    section.extra["rates"] = rates
    section.extra["config"] = dict(config.__dict__)
    section.rows = limit_rows(sections, rates)
    describe(section)
    return section


def describe(section: SectionResult) -> None:
    """The section's title and notes: which rows' times were measured under load."""
    section.title = "How far each fused row is from this machine's limit"
    section.notes = [note for note in (busy_note(section.rows),) if note]
