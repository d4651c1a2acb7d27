"""Shared machinery of the pykernels asv suite: the implementation x device axis, cached append-only inputs,
one synchronizing wrapper for every CUDA measurement, and skips for what this machine cannot run.

!!! The data helpers must not be changed -- only appended: changing inputs breaks every benchmark's history. !!!
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import torch

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # importing the suite without asv_runner (the bare-import check in the tests)

    class SkipNotImplemented(NotImplementedError):
        pass


SIZES = [100, 10_000, 1_000_000, 10_000_000]
DTYPES = ["float32", "float64"]
DEVICES = ["cpu", "cuda"]
IMPLEMENTATIONS = ["numpy", "torch", "torch.compile", "pykernels-cpp", "pykernels-numba"]
DEGREE = 4
COEFFS = (0.3, -0.2, 0.1, 0.05, -0.01)


def require(implementation: str, device: str) -> None:
    """Raise SkipNotImplemented (asv then skips, not fails) for a combination that cannot run here."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SkipNotImplemented("no CUDA device")
    if implementation == "numpy" and device != "cpu":
        raise SkipNotImplemented("NumPy runs on the CPU only")
    if implementation == "pykernels-numba" and importlib.util.find_spec("numba") is None:
        raise SkipNotImplemented("numba not installed")
    if implementation == "pykernels-numba" and device == "cuda" and importlib.util.find_spec("numba.cuda") is None:
        raise SkipNotImplemented("numba-cuda not installed")


def synchronized(device: str, fn):
    """The one wrapper every CUDA measurement goes through: the clock must not stop before the GPU has."""
    if device != "cuda":
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        torch.cuda.synchronize()
        return result

    wrapper.synchronizes = True
    return wrapper


@functools.lru_cache(maxsize=8)
def poly_data(n: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x in [0, 2), y = sin x + noise, the fixed coefficients. Append-only."""
    rng = np.random.default_rng(1234)
    x = (2 * rng.random(n)).astype(dtype)
    y = (np.sin(x) + 0.01 * rng.standard_normal(n)).astype(dtype)
    return x, y, np.asarray(COEFFS, dtype=dtype)


@functools.lru_cache(maxsize=8)
def dot_data(n: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Two standard normal vectors. Append-only."""
    rng = np.random.default_rng(5678)
    return rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)


def seed_problem() -> tuple[np.ndarray, np.ndarray]:
    """The polynomial write-up's data: x = linspace(0, 5, 100), y = sin x (float32)."""
    x = np.linspace(0, 5, 100).astype(np.float32)
    return x, np.sin(x)


def to_torch(device: str, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays)


def pykernels_backend(implementation: str) -> str:
    return implementation.removeprefix("pykernels-")


class Benchmark:
    """Base of every benchmark class: fixed seeds, threads pinned to what asv's machine file says."""

    timeout = 600
