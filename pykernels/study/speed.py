"""Section 2: the first write-up's speed comparisons, timed correctly.

The write-up timed ``for i in range(n): a = randn(...); b = randn(...); c = op(a, b)`` with ``%%time``: the
random generation dominates those loops, and its GPU figure (6 ms for ten 10000x10000 adds) was read before
the GPU had finished, so it timed the kernel launches. Here each loop is timed as written and with the operation
alone, warmed up, with ``torch.cuda.synchronize()`` before every clock read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ._common import LoadMeter, SectionResult, busy_note, include_row, plain

# The write-up's %%time wall times (seconds), on its machine (Colab CPU, Tesla K80).
WRITE_UP_SECONDS = {
    ("matmul", "numpy"): 0.158,
    ("matmul", "torch"): 0.0363,
    ("add", "numpy"): 97.0,
    ("add", "torch"): 16.0,
    ("add", "torch-gpu"): 0.00616,
}
WRITE_UP_SIZES = {"matmul": (100, 100), "add": (10_000, 10)}  # (matrix size, loops) it timed
SAME_TIME = 0.05  # relative difference below which two timings of one short loop are not told apart


@dataclass
class SpeedConfig:
    matmul_size: int = 100
    matmul_loops: int = 100
    add_size: int = 10_000
    add_loops: int = 10
    devices: tuple[str, ...] = ("cpu",)
    repeat: int = 1


def _op(workload: str, impl: str) -> Callable[..., object]:
    """The loop's operation; called with ``out=`` it writes into a preallocated result instead of a fresh one."""
    if impl == "numpy":
        return np.matmul if workload == "matmul" else np.add
    return torch.matmul if workload == "matmul" else torch.add


def _time_loop(body: Callable[[], None], loops: int, device: str, synchronized: bool) -> float:
    if synchronized and device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(loops):
        body()
    if synchronized and device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _minor_page_faults() -> int | None:
    """This process's minor page faults so far (first touches of fresh memory), or None off Unix."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _per_call(after: int | None, before: int | None, calls: int) -> float | None:
    return None if after is None or before is None else (after - before) / calls


def measure(workload: str, impl: str, size: int, loops: int, repeat: int) -> dict:
    device = "cuda" if impl == "torch-gpu" else "cpu"
    if impl == "numpy":
        randn = lambda: np.random.randn(size, size)  # noqa: E731, NPY002 (the write-up's legacy global-state call)
    else:
        randn = lambda: torch.randn([size, size], device=device)  # noqa: E731
    op = _op(workload, impl)

    def as_written():
        a = randn()
        b = randn()
        op(a, b)

    a, b = randn(), randn()
    result = op(a, b)

    def op_alone():
        op(a, b)

    def op_into_preallocated():
        op(a, b, out=result)

    as_written()  # warm-up: first-call allocations, library initialization, CUDA context
    op_alone()
    op_into_preallocated()
    row = {"workload": workload, "name": impl, "device": device, "size": size, "loops": loops}
    with LoadMeter() as meter:
        row["as_written_seconds"] = min(_time_loop(as_written, loops, device, True) for _ in range(repeat))
        faults = _minor_page_faults()
        row["op_alone_seconds"] = min(_time_loop(op_alone, loops, device, True) for _ in range(repeat))
        row["op_alone_page_faults_per_call"] = _per_call(_minor_page_faults(), faults, loops * repeat)
        faults = _minor_page_faults()
        row["op_preallocated_seconds"] = min(
            _time_loop(op_into_preallocated, loops, device, True) for _ in range(repeat)
        )
        row["op_preallocated_page_faults_per_call"] = _per_call(_minor_page_faults(), faults, loops * repeat)
    row["load"] = meter.result()
    row["bytes_per_op"] = 3 * size * size * a.itemsize if workload == "add" else None  # read a, b; write the sum
    if device == "cuda":  # what %%time saw: the clock read while the GPU still works
        row["as_written_unsynchronized_seconds"] = _time_loop(as_written, loops, device, False)
        torch.cuda.synchronize()
    # the write-up's %%time stands beside its own sizes only (--quick runs smaller ones)
    same_size = (size, loops) == WRITE_UP_SIZES[workload]
    row["write_up_seconds"] = WRITE_UP_SECONDS.get((workload, impl)) if same_size else None
    return row


def run(config: SpeedConfig) -> SectionResult:
    section = SectionResult(TITLE)
    plan = []
    for workload, size, loops in (
        ("matmul", config.matmul_size, config.matmul_loops),
        ("add", config.add_size, config.add_loops),
    ):
        for impl in ("numpy", "torch", "torch-gpu"):
            device = "cuda" if impl == "torch-gpu" else "cpu"
            name = f"{workload} {size}x{size} x{loops}: {impl}"
            if include_row(section, name, device, config.devices):
                plan.append((workload, impl, size, loops))
    for workload, impl, size, loops in tqdm(plan, desc="speed comparisons", unit="row"):
        section.rows.append(measure(workload, impl, size, loops, config.repeat))
    describe(section)
    return section


TITLE = "Speed comparisons (the speed write-up)"


def describe(section: SectionResult) -> None:
    """The section's title and notes, from its rows (a saved run's report is written again with today's words)."""
    section.title = TITLE
    rows = section.rows
    notes = (_gpu_note(rows), _randn_note(rows), _preallocated_note(rows), _add_note(rows), busy_note(rows))
    section.notes = [note for note in notes if note]


def _row(rows: list[dict], workload: str, impl: str) -> dict | None:
    return next((r for r in rows if r["workload"] == workload and r["name"] == impl), None)


def _gpu_note(rows: list[dict]) -> str:
    note = (
        "The write-up's GPU add (6.16 ms for ten 10000x10000 randn+add) read the clock before the GPU finished: CUDA "
        "launches are asynchronous, so %%time measured the launches."
    )
    gpu = _row(rows, "add", "torch-gpu")
    if gpu:
        note += (
            f" Here the loop ({gpu['loops']} randn+add of {gpu['size']}x{gpu['size']}) reads "
            f"{plain(gpu['as_written_unsynchronized_seconds'])} s unsynchronized and "
            f"{plain(gpu['as_written_seconds'])} s with torch.cuda.synchronize() before the clock is read."
        )
    return note


def _randn_note(rows: list[dict]) -> str | None:
    """How much of the as-written loops is randn, from the rows that ran."""
    parts = []
    for workload in ("matmul", "add"):
        numpy_row, torch_row = _row(rows, workload, "numpy"), _row(rows, workload, "torch")
        if not (numpy_row and torch_row):
            continue
        shares = [f"{impl} {_randn_share(r)}" for impl, r in (("NumPy", numpy_row), ("torch", torch_row))]
        parts.append(f"{workload} {numpy_row['size']}x{numpy_row['size']}: {' and '.join(shares)}")
    if not parts:
        return None
    return (
        "'as written' includes the two randn calls per iteration, as the write-up's loops do (NumPy's are float64); "
        "'op alone' times the operation on pre-generated inputs. The randn calls' share of the as-written time, "
        f"measured: {'; '.join(parts)}."
    )


def _preallocated_note(rows: list[dict]) -> str | None:
    """Where writing into a preallocated result changed nothing measurable, say so rather than leave the reader to
    read meaning into a few percent either way."""
    same = [
        r
        for r in rows
        if r["device"] == "cpu"
        and r["op_alone_page_faults_per_call"] == r["op_preallocated_page_faults_per_call"] == 0
        and abs(r["op_preallocated_seconds"] / r["op_alone_seconds"] - 1) < SAME_TIME
    ]
    if not same:
        return None
    differences = [abs(r["op_preallocated_seconds"] / r["op_alone_seconds"] - 1) for r in same]
    which = "; ".join(f"{r['workload']} {r['size']}x{r['size']}: {r['name']}" for r in same)
    return (
        f"'op alone' and 'into a preallocated result' differ by at most {max(differences):.0%} in {which}: a result "
        "that small is served from the allocator's cache of freed blocks (0 page faults per call either way, "
        "measured), so both do the same work and the difference, either way, is the timing noise of one short loop."
    )


def _randn_share(row: dict) -> str:
    randn = row["as_written_seconds"] - row["op_alone_seconds"]
    if randn <= 0:  # the op alone took longer than the loop with randn: noise larger than randn's cost
        return "not measurable (the op alone took as long as the whole loop)"
    return f"{randn / row['as_written_seconds']:.0%}"


def _add_note(rows: list[dict]) -> str | None:
    """What a fresh result costs the add, from the rates and the page faults measured (not from guesses)."""
    numpy_row, torch_row = _row(rows, "add", "numpy"), _row(rows, "add", "torch")
    if not (numpy_row and torch_row):
        return None

    def rates(r):
        moved = r["bytes_per_op"] * r["loops"] / 1e9
        return moved / r["op_alone_seconds"], moved / r["op_preallocated_seconds"]

    numpy_fresh, numpy_out = rates(numpy_row)
    torch_fresh, torch_out = rates(torch_row)
    note = (
        f"The add moves 3 arrays per call, NumPy's float64 ones twice torch's float32 bytes. Into a fresh result "
        f"('op alone') NumPy moves {numpy_fresh:.1f} GB/s and torch {torch_fresh:.1f} GB/s; into a preallocated "
        f"result (`out=`) {numpy_out:.1f} and {torch_out:.1f} GB/s."
    )
    faults = [r["op_alone_page_faults_per_call"] for r in (numpy_row, torch_row)]
    if None not in faults:
        result_mb = torch_row["bytes_per_op"] / 3 / 1e6
        note += (
            f" Page faults per call, fresh result: NumPy {faults[0]:,.0f}, torch {faults[1]:,.0f} (into a "
            f"preallocated one: {numpy_row['op_preallocated_page_faults_per_call']:,.0f} and "
            f"{torch_row['op_preallocated_page_faults_per_call']:,.0f}); a fresh {result_mb:.0f} MB result touched "
            f"in 4 KiB pages is {result_mb * 1e6 / 4096:,.0f} faults."
        )
        if faults[1] > 10 * max(faults[0], 1) and torch_out > 1.5 * torch_fresh:
            note += (
                " torch's rate lost to the fresh result goes with its faults: its CPU allocator returns large blocks "
                "to the OS and gets them back page by page, while NumPy asks the kernel for transparent huge pages "
                "on large arrays (torch does with THP_MEM_ALLOC_ENABLE=1)."
            )
    return note
