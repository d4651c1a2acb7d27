"""What every study section shares: devices, clocks that synchronize, machine facts, row bookkeeping."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


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
        queue.put(("done", target(*args, progress=lambda fraction: queue.put(("progress", fraction)))))
    except BaseException:  # reported to the parent, which raises
        import traceback

        queue.put(("error", traceback.format_exc()))


def run_isolated(
    target: Callable, args: tuple, on_progress: Callable[[float], None], env: dict[str, str] | None = None
) -> Any:
    """Run ``target(*args, progress=...)`` in a fresh process and return its result.

    Each row gets its own interpreter: a row that ran before (torch.compile installing dynamo's frame hooks,
    JAX, numba's threads, a 10^7-element heap) must not change the timing of the next one. ``target`` reports
    progress fractions, which arrive here through a queue and move the parent's progress bar. ``env``: variables
    set for the child only (read by torch when it starts, e.g. THP_MEM_ALLOC_ENABLE)."""
    import multiprocessing
    import queue as queue_module

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    process = context.Process(target=_isolated_child, args=(messages, target, args, torch.get_num_threads()))
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})  # a spawned child copies the parent's environment when it starts
    try:
        process.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
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
