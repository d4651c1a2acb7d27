"""The ops, one class each: implementation x device x size x dtype, timed per call.

Baselines are the write-ups' formulas (pykernels.reference) in NumPy, torch eager and torch.compile; the
pykernels rows call the registered ops. ``peakmem_`` shows that the fused ops never build the N x (D+1) power matrix
the references allocate; ``track_`` records throughput and the speedup over torch measured in one process.
"""

from __future__ import annotations

import timeit

import numpy as np
import torch

import pykernels
from pykernels import reference

from .common import (
    DEGREE,
    DEVICES,
    DTYPES,
    IMPLEMENTATIONS,
    SIZES,
    Benchmark,
    SkipNotImplemented,
    dot_data,
    poly_data,
    pykernels_backend,
    require,
    synchronized,
    to_torch,
)

_NUMPY = {
    "poly": lambda x, y, c: reference.poly_numpy(x, c),
    "poly_backward": lambda x, y, c: reference.poly_backward_numpy(y, x, c),
    "poly_mse": reference.poly_mse_numpy,
}


def _writeup_formula(name: str):
    """The write-up's power-matrix formula in torch: ``reference.writeup_<name>``, called ``reference.<name>``
    before the references became Horner's definitions (so the history's older commits run the same baseline)."""
    return getattr(reference, f"writeup_{name}", None) or getattr(reference, name)


_TORCH = {
    "poly": lambda x, y, c: _writeup_formula("poly_torch")(x, c),
    "poly_backward": lambda x, y, c: _writeup_formula("poly_backward_torch")(y, x, c),
    "poly_mse": lambda x, y, c: _writeup_formula("poly_mse_torch")(x, y, c),
}


def _pykernels_poly_op(op: str, backend: str):
    ops = pykernels.get_backend(backend)
    return {
        "poly": lambda x, y, c: ops.poly(x, c),
        "poly_backward": lambda x, y, c: ops.poly_backward(y, x, c),
        "poly_mse": ops.poly_mse,
    }[op]


class _PolyOp(Benchmark):
    op = ""
    params = (IMPLEMENTATIONS, DEVICES, SIZES, DTYPES)
    param_names = ("implementation", "device", "n", "dtype")

    def setup(self, implementation, device, n, dtype):
        require(implementation, device)
        x, y, c = poly_data(n, dtype)
        if implementation == "numpy":
            self.args, fn = (x, y, c), _NUMPY[self.op]
        else:
            self.args = to_torch(device, x, y, c)
            if implementation == "torch":
                fn = _TORCH[self.op]
            elif implementation == "torch.compile":
                fn = torch.compile(_TORCH[self.op], dynamic=False)
            else:
                fn = _pykernels_poly_op(self.op, pykernels_backend(implementation))
        self.fn = synchronized(device, fn)
        self.fn(*self.args)  # warm-up: compiles (torch.compile, numba) before anything is timed

    def time_call(self, implementation, device, n, dtype):
        self.fn(*self.args)

    def peakmem_call(self, implementation, device, n, dtype):
        if n < SIZES[-1]:
            raise SkipNotImplemented("peak memory is tracked at the largest size only")
        self.fn(*self.args)

    def track_gbytes_per_second(self, implementation, device, n, dtype):
        """Input bytes read per second (x, and y or grad_y where the op reads them)."""
        seconds = min(timeit.repeat(lambda: self.fn(*self.args), number=1, repeat=5))
        reads = 1 if self.op == "poly" else 2
        return reads * n * np.dtype(dtype).itemsize / seconds / 1e9

    track_gbytes_per_second.unit = "GB/s"


class Poly(_PolyOp):
    op = "poly"


class PolyBackward(_PolyOp):
    op = "poly_backward"


class PolyMSE(_PolyOp):
    op = "poly_mse"


class Dot(Benchmark):
    params = (IMPLEMENTATIONS, DEVICES, SIZES, DTYPES)
    param_names = ("implementation", "device", "n", "dtype")

    def setup(self, implementation, device, n, dtype):
        require(implementation, device)
        a, b = dot_data(n, dtype)
        if implementation == "numpy":
            self.args, fn = (a, b), np.dot
        else:
            self.args = to_torch(device, a, b)
            fn = {"torch": torch.dot, "torch.compile": torch.compile(torch.dot, dynamic=False)}.get(implementation)
            if fn is None:
                fn = pykernels.get_backend(pykernels_backend(implementation)).dot
        self.fn = synchronized(device, fn)
        self.fn(*self.args)

    def time_call(self, implementation, device, n, dtype):
        self.fn(*self.args)

    def track_gbytes_per_second(self, implementation, device, n, dtype):
        seconds = min(timeit.repeat(lambda: self.fn(*self.args), number=1, repeat=5))
        return 2 * n * np.dtype(dtype).itemsize / seconds / 1e9

    track_gbytes_per_second.unit = "GB/s"

    def track_relative_error(self, implementation, device, n, dtype):
        """|result - float64 result| / |float64 result|: accumulation accuracy."""
        exact = float(np.dot(*(np.asarray(a, np.float64) for a in dot_data(n, dtype))))
        value = float(self.fn(*self.args))
        return abs(value - exact) / abs(exact)

    track_relative_error.unit = "relative error"


class Speedup(Benchmark):
    """The baseline's time over pykernels', both measured in this process back to back (best of 5 each): the ratio
    cancels the drift of a shared machine that absolute times carry. Baselines: the write-ups' formulas (power matrix
    and matmul; ``dot``) in NumPy and in torch eager, on the same float32 data."""

    params = (["poly_mse", "dot"], ["pykernels-cpp", "pykernels-numba"], ["numpy", "torch"], [100, 10_000_000])
    param_names = ("op", "implementation", "baseline", "n")
    unit = "x"

    def setup(self, op, implementation, baseline, n):
        require(implementation, "cpu")
        backend = pykernels.get_backend(pykernels_backend(implementation))
        if op == "dot":
            a, b = dot_data(n, "float32")
            args = to_torch("cpu", a, b)
            self.ours = lambda: backend.dot(*args)
            self.theirs = (lambda: np.dot(a, b)) if baseline == "numpy" else (lambda: torch.dot(*args))
        else:
            x, y, c = poly_data(n, "float32")
            args = to_torch("cpu", x, y, c)
            self.ours = lambda: backend.poly_mse(*args)
            if baseline == "numpy":
                self.theirs = lambda: reference.poly_mse_numpy(x, y, c)
            else:
                self.theirs = lambda: _TORCH["poly_mse"](*args)
        self.ours()
        self.theirs()

    def track_speedup(self, op, implementation, baseline, n):
        number = max(1, 10_000 // max(1, n // 1000))
        ours = min(timeit.repeat(self.ours, number=number, repeat=5))
        theirs = min(timeit.repeat(self.theirs, number=number, repeat=5))
        return theirs / ours


class Bandwidth(Benchmark):
    """GB/s of the bandwidth-bound ops on 10^7 float32 points, the size the tracked history follows (the same
    measurement as PolyMSE's and Dot's track_gbytes_per_second, at one size and dtype)."""

    params = (["poly_mse", "dot"], ["torch", "pykernels-cpp", "pykernels-numba"], DEVICES)
    param_names = ("op", "implementation", "device")
    unit = "GB/s"
    n = 10_000_000

    def setup(self, op, implementation, device):
        self.measured = PolyMSE() if op == "poly_mse" else Dot()
        self.measured.setup(implementation, device, self.n, "float32")

    def track_gbytes_per_second(self, op, implementation, device):
        return self.measured.track_gbytes_per_second(implementation, device, self.n, "float32")

    track_gbytes_per_second.unit = "GB/s"


class Accuracy(Benchmark):
    """The worst error, in units in the last place, against exact rational arithmetic (pykernels.accuracy) over a
    fixed set of problems: random ones (dot: standard normal pairs of 1,000; poly_mse: the seed's sin x at 200
    random points) and ill-conditioned ones (dot: Ogita-Rump-Oishi pairs of 100 at condition numbers 1e8 to 1e24
    in float64, 1e4 to 1e12 in float32; poly_mse: y = p(x) rounded, so the residuals are rounding errors). torch is
    torch.dot and the write-up's power-matrix formula. 0.5 or less is correctly rounded; lower is better."""

    params = (["dot", "poly_mse"], ["torch", "pykernels-cpp", "pykernels-numba"], DTYPES, ["random", "ill-conditioned"])
    param_names = ("op", "implementation", "dtype", "data")
    unit = "ulps"
    CONDITIONS = {"float32": [1e4, 1e8, 1e12], "float64": [1e8, 1e16, 1e24]}

    def setup(self, op, implementation, dtype, data):
        require(implementation, "cpu")
        try:  # imported here: the suite runs against commits older than the module (asv's history, the comparison)
            from pykernels import accuracy
        except ImportError:
            raise SkipNotImplemented("pykernels.accuracy is newer than this commit") from None
        self.accuracy = accuracy
        self.dtype = getattr(torch, dtype)
        generator = np.random.default_rng(20261203)
        if op == "dot":
            if data == "random":
                self.problems = [accuracy.random_dot(1000, self.dtype, generator) for _ in range(8)]
            else:
                conditions = self.CONDITIONS[dtype] * 3
                self.problems = [accuracy.ill_conditioned_dot(100, c, self.dtype, generator) for c in conditions]
        else:
            make = accuracy.random_fit if data == "random" else accuracy.near_fit
            self.problems = [make(200, DEGREE, self.dtype, generator) for _ in range(8)]
        if implementation == "torch":
            self.fn = torch.dot if op == "dot" else reference.writeup_poly_mse_torch
        else:
            self.fn = getattr(pykernels.get_backend(pykernels_backend(implementation)), op)

    def track_worst_ulps(self, op, implementation, dtype, data):
        errors = self.accuracy.dot_errors if op == "dot" else self.accuracy.poly_mse_errors
        return max(errors(self.fn, self.problems))
