"""What every study section shares: devices, clocks that synchronize, machine facts, row bookkeeping."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .. import _environ


def cuda_available() -> bool:
    return torch.cuda.is_available()


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work: a clock read before this measures only the launches."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates the time of the timed blocks only (progress bars and bookkeeping run between them)."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds += time.perf_counter() - start


def _fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` significant digits in fixed notation, every digit of the integer part kept."""
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{decimals}f}"
    significant = text.replace(",", "").replace("-", "").replace(".", "").lstrip("0")
    if decimals and len(significant) > digits:  # rounding carried into a new digit: 0.09996 -> 0.1000
        text = f"{value:,.{decimals - 1}f}"
    return text


def plain(value: float | None, digits: int = 3) -> str:
    """A number as a reader writes it, never in e-notation: ``digits`` significant digits (trailing zeros dropped),
    but every digit of the integer part (3,154; 0.00791; 12.5); from a million up in words (62.5 million,
    1.2 billion); from a trillion up or below 10^-5 as a power of ten (3.43·10^121, 2.4·10^-16). None and NaN (no
    value) are a dash; inf is "inf"."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    # each range is chosen by the value as it will be written: 999,999.5 is written 1 million, not 1,000,000
    if 1e-5 <= magnitude < 999_999.5:
        text = _fixed(value, digits)
        return text.rstrip("0").rstrip(".") if "." in text else text
    if magnitude >= 1e-5:
        for scale, word in ((1e6, "million"), (1e9, "billion")):
            if float(f"{magnitude / scale:.{digits}g}") < 999.5:
                return f"{plain(value / scale, digits)} {word}"
    # the mantissa and exponent from Python's own rounding: no 10**exponent, which is 0 below 10^-323
    mantissa_text, exponent_text = f"{value:.{digits - 1}e}".split("e")
    mantissa, exponent = float(mantissa_text), int(exponent_text)
    if abs(mantissa) == 1:
        return f"{'-' if mantissa < 0 else ''}10^{exponent}"
    return f"{mantissa:.{digits}g}·10^{exponent}"


def ratio(numerator: float | None, denominator: float | None) -> float:
    """``numerator / denominator`` where both are measured (finite, the denominator above 0), else NaN (which
    :func:`speedup` writes as a dash): a time of 0 or NaN gives no speedup, not a ZeroDivisionError or "nanx"."""
    if numerator is None or denominator is None or not (math.isfinite(numerator) and math.isfinite(denominator)):
        return math.nan
    return numerator / denominator if denominator > 0 else math.nan


def speedup(value: float | None) -> str:
    """A speedup, rounded to two significant digits (the report's timings do not bear more): 3,200x; 17x; 2.8x;
    0.29x; from a million up in words (1.2 million x). A dash where there is no speedup (None, NaN, inf, 0 or
    less: a time that was not measured)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return "–"
    rounded = float(f"{value:.2g}")
    if rounded < 999_999.5:
        return _fixed(rounded, 2) + "x"
    text = plain(rounded, 2)
    return text + (" x" if text[-1].isalpha() else "x")  # "12 million x", "10^25x"


BUSY_CPUS = 0.2  # a row is flagged when other processes used more than this many CPUs on average
SHORTEST_METERED_CPU_SECONDS = 0.5  # /proc/stat counts 10 ms ticks: shorter windows (x CPUs) cannot be told apart


def _machine_busy_seconds() -> float | None:
    """CPU seconds every process on the machine has spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is already in user time


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its children that have ended."""
    try:
        import resource
    except ImportError:  # not on Unix: this process only
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class LoadMeter:
    """What else ran on the machine while a row was measured: the load average before and after, and the share of
    the machine's CPU time that other processes used meanwhile (all CPU time on the machine minus the row's own).
    A shared machine can move a row's time by several times; a row measured while others used more than
    ``BUSY_CPUS`` CPUs on average is flagged as busy. A window too short for /proc/stat's ticks is not judged."""

    def __enter__(self) -> LoadMeter:
        self.load_before = load_average()
        self.machine_before, self.own_before = _machine_busy_seconds(), _own_cpu_seconds()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.wall = time.perf_counter() - self.started
        self.load_after = load_average()
        self.machine_after, self.own_after = _machine_busy_seconds(), _own_cpu_seconds()

    def result(self) -> dict[str, Any]:
        cpus, others = os.cpu_count() or 1, None
        measurable = self.wall * cpus >= SHORTEST_METERED_CPU_SECONDS
        if measurable and self.machine_before is not None and self.machine_after is not None:
            other_seconds = (self.machine_after - self.machine_before) - (self.own_after - self.own_before)
            others = min(1.0, max(0.0, other_seconds / (self.wall * cpus)))
        return {
            "load_average_before": None if self.load_before is None else round(self.load_before, 2),
            "load_average_after": None if self.load_after is None else round(self.load_after, 2),
            "others_cpu_share": None if others is None else round(others, 3),
            "busy": bool(others is not None and others * cpus > BUSY_CPUS),
        }


def load_cell(row: dict[str, Any]) -> str:
    """The report's load column: the other processes' share of the CPUs, marked when the row was measured busy."""
    load = row.get("load")
    if not load or load["others_cpu_share"] is None:
        return "– (too short to tell)" if load else "–"
    cell = f"{100 * load['others_cpu_share']:.0f}%"
    if load["load_average_before"] is not None:
        cell += f" (load {load['load_average_before']:.1f}→{load['load_average_after']:.1f})"
    return f"**busy: {cell}**" if load["busy"] else cell


def busy_note(rows: list[dict[str, Any]]) -> str | None:
    """The note a section gets when some of its rows were measured while the machine was busy."""
    busy = [
        f"`{r['name']}`" + (f" at lr = {plain(r['lr'])}" if "lr" in r else "")
        for r in rows
        if (r.get("load") or {}).get("busy")
    ]
    if not busy:
        return None
    which = f"all {len(rows)} rows" if len(busy) == len(rows) else f"{len(busy)} of {len(rows)} rows: {'; '.join(busy)}"
    return (
        f"Measured under load ({which}): other processes used more than "
        f"{BUSY_CPUS:g} CPUs on average while these rows ran, so their times are inflated by an unknown amount "
        "(up to several times here); rerun on a quiet machine before comparing them."
    )


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {pkg: _version(pkg) for pkg in ("pykernels", "torch", "numpy", "numba", "jax", "matplotlib")},
        "torch_cuda": torch.version.cuda,
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
    }


@dataclass
class Skipped:
    """A row that could not run here, and why (no GPU, numba missing, ...)."""

    name: str
    reason: str


@dataclass
class SectionResult:
    """One section of the report: its rows (dicts of plain values), skipped rows and notes."""

    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": [asdict(s) for s in self.skipped]}


def include_row(
    section: SectionResult, name: str, device: str, devices: tuple[str, ...], reason: str | None = None
) -> bool:
    """Whether the row can run here; if not, it is listed in the section as skipped, with why (the first of:
    device not selected, no GPU, the row's own ``reason``)."""
    if device not in devices:
        reason = "device not selected (--device)"
    elif device == "cuda" and not cuda_available():
        reason = "no CUDA GPU"
    if reason:
        section.skipped.append(Skipped(name, reason))
        return False
    return True


def rows_progress(desc: str, total: int):
    """The progress bar of a section: rows, advanced in fractions by the rows' own progress reports."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="row", bar_format="{l_bar}{bar}| {n:.1f}/{total} rows [{elapsed}<{remaining}]"
    )


def unavailable_reason(requirements: list[tuple[Callable[[], bool], str]]) -> str | None:
    """The first unmet requirement's reason, or None."""
    for check, reason in requirements:
        if not check():
            return reason
    return None


def _isolated_child(queue, target, args, threads) -> None:
    try:
        torch.set_num_threads(threads)
        with LoadMeter() as meter:
            result = target(*args, progress=lambda fraction: queue.put(("progress", fraction)))
        queue.put(("done", {**result, "load": meter.result()}))
    except BaseException:  # reported to the parent, which raises
        import traceback

        queue.put(("error", traceback.format_exc()))


def run_isolated(
    target: Callable, args: tuple, on_progress: Callable[[float], None], env: dict[str, str] | None = None
) -> Any:
    """Run ``target(*args, progress=...)`` in a fresh process and return its result (a dict), with the machine's
    load while it ran under ``"load"`` (:class:`LoadMeter`).

    Each row gets its own interpreter: a row that ran before (torch.compile installing dynamo's frame hooks,
    JAX, numba's threads, a 10^7-element heap) must not change the timing of the next one. ``target`` reports
    progress fractions, which arrive here through a queue and move the parent's progress bar. ``env``: variables
    set for the child only (read by torch when it starts, e.g. THP_MEM_ALLOC_ENABLE)."""
    import multiprocessing
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    process = context.Process(target=_isolated_child, args=(messages, target, args, torch.get_num_threads()))
    with _environ.scoped(env or {}):  # a spawned child copies the parent's environment when it starts
        process.start()
    try:
        while True:
            try:
                kind, payload = messages.get(timeout=5)
            except queue_module.Empty:
                if not process.is_alive():
                    raise RuntimeError(f"study row process died (exit code {process.exitcode})") from None
                continue
            if kind == "progress":
                on_progress(payload)
            elif kind == "done":
                return payload
            else:
                raise RuntimeError(f"study row failed in its process:\n{payload}")
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()


def mse_reference_row(section: SectionResult) -> dict:
    """The row every fit's final MSE is compared with: exact (float64) gradient descent where it ran."""
    name = section.extra.get("mse_reference_row", section.extra["reference_row"])
    return named_row(section, name)


def named_row(section: SectionResult, name: str) -> dict:
    """The section's row called ``name``; a ValueError that names it when there is none (a saved run edited or
    written by another version), not a bare StopIteration."""
    row = next((r for r in section.rows if r["name"] == name), None)
    if row is None:
        raise ValueError(f"the section {section.title!r} has no row {name!r}, its reference")
    return row


def skipped_by_reason(section: SectionResult) -> dict[str, list[str]]:
    """The names of the section's rows that did not run, grouped by why, in the order they were skipped (the
    report's "Not run here" line and the figures' note both say them this way)."""
    grouped: dict[str, list[str]] = {}
    for skipped in section.skipped:
        grouped.setdefault(skipped.reason, []).append(skipped.name)
    return grouped
