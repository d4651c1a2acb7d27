"""The numba kernels as the torch custom ops ``pykernels::numba_<op>``.

The ops are declared with the compiled ones, from the same schema text (csrc/ops.cpp), and share their autograd
kernels (csrc/autograd.cpp), fake kernels (pykernels._meta) and vmap rules (pykernels._vmap). This module registers
their CPU and CUDA implementations when ``pykernels`` is imported, without importing numba: the kernels (and numba)
load on the first call. So every thread sees the ops from the start, ``torch.compile`` traces them on its first
call, and a program exported with them loads after a plain ``import pykernels``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import ModuleType

import numpy as np
import torch

from .. import _checks, _meta, _vmap
from .._backends import Backend, register_backend
from . import _config  # (imported now for its fork guard: a fork may come before the first kernel call)

PREFIX = "numba_"
_LIBRARY = torch.library.Library("pykernels", "IMPL")  # kept alive: it owns the registrations

_kernel_modules: dict[str, ModuleType] = {}
_kernel_modules_lock = threading.RLock()


def _kernels(name: str) -> ModuleType:
    """``pykernels.numba.cpu`` or ``.gpu``, imported (with numba) on first use."""
    module = _kernel_modules.get(name)
    if module is None:
        with _kernel_modules_lock:
            if name not in _kernel_modules:
                loaded = __import__(f"{__package__}.{name}", fromlist=[name])
                # numba's first dispatch imports more modules (NumPy's lazy ones among them): done here, under
                # the lock a fork waits for, a child never starts while another thread is halfway through one.
                for dtype in (np.float32, np.float64):
                    sys.modules["numba"].typeof(np.empty(1, dtype))
                _kernel_modules[name] = loaded
            module = _kernel_modules[name]
    return module


def _fork_locks() -> list:
    """The locks a first use in another thread may hold (loading the kernels, numba compiling): a fork waits for
    them, so that no child starts with one held by a thread it does not have (it would wait forever)."""
    locks = [_kernel_modules_lock]
    if "numba.core.compiler_lock" in sys.modules:
        locks.append(sys.modules["numba.core.compiler_lock"].global_compiler_lock)
    return locks


def _before_fork() -> None:
    global _held_over_fork
    _held_over_fork = _fork_locks()
    for lock in _held_over_fork:
        lock.acquire()


def _after_fork() -> None:
    for lock in reversed(_held_over_fork):
        lock.release()


_held_over_fork: list = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A contiguous 1-D NumPy view of t (NumPy copies only a non-contiguous t). detach: the op runs below
    autograd, but its inputs may still carry requires_grad, which .numpy() refuses."""
    return t.detach().numpy().reshape(-1)


# CPU implementations: validate, view the inputs as NumPy (zero-copy), run the kernel into NumPy outputs, hand them
# to torch (zero-copy). Allocating with NumPy and converting costs less than torch.empty + .numpy() here.


def _poly_cpu(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    _checks.check_poly_inputs(x, coeffs)
    xs = _numpy(x)
    y = np.empty_like(xs)
    _kernels("cpu").poly_into(xs, _numpy(coeffs), y)
    return torch.from_numpy(y).view(x.shape)


def _poly_backward_cpu(grad_y, x, coeffs):
    _checks.check_poly_backward_inputs(grad_y, x, coeffs)
    xs = _numpy(x)
    grad_x, grad_coeffs = np.empty_like(xs), np.empty(coeffs.shape, xs.dtype)
    _kernels("cpu").poly_backward_into(_numpy(grad_y), xs, _numpy(coeffs), grad_x, grad_coeffs)
    return torch.from_numpy(grad_x).view(x.shape), torch.from_numpy(grad_coeffs)


def _poly_mse_cpu(x, y, coeffs):
    _checks.check_poly_mse_inputs(x, y, coeffs)
    xs = _numpy(x)
    loss, grad = np.empty(1, xs.dtype), np.empty(coeffs.shape, xs.dtype)
    _kernels("cpu").poly_mse_into(xs, _numpy(y), _numpy(coeffs), loss, grad)
    return torch.from_numpy(loss).view(()), torch.from_numpy(grad)


def _dot_cpu(a, b):
    _checks.check_dot_inputs(a, b)
    a_np = _numpy(a)
    out = np.empty(1, a_np.dtype)
    _kernels("cpu").dot_into(a_np, _numpy(b), out)
    return torch.from_numpy(out).view(())


def _dot_backward_cpu(grad, a, b):
    _checks.check_dot_backward_inputs(grad, a, b)
    a_np, b_np = _numpy(a), _numpy(b)
    grad_a, grad_b = np.empty_like(b_np), np.empty_like(a_np)
    _kernels("cpu").dot_backward_into(_numpy(grad)[0], a_np, b_np, grad_a, grad_b)
    return torch.from_numpy(grad_a), torch.from_numpy(grad_b)


def _fit_poly_cpu(x, y, coeffs, lr, steps, record_every):
    _checks.check_fit_poly_inputs(x, y, coeffs, lr, steps, record_every)
    y_np = y.detach().contiguous().numpy()
    fitted, trace = _kernels("cpu").fit_poly(
        x.detach().contiguous().numpy(), y_np, coeffs.detach().numpy(), lr, steps, record_every
    )
    return torch.from_numpy(fitted), torch.from_numpy(trace)


def _poly_moments_cpu(x, y, degree):
    _checks.check_poly_moments_inputs(x, y, degree)
    power_sums, cross_sums, square_sum = _kernels("cpu").poly_moments(
        x.detach().contiguous().numpy(), y.detach().contiguous().numpy(), degree
    )
    return torch.from_numpy(power_sums), torch.from_numpy(cross_sums), torch.from_numpy(square_sum)


def _fit_poly_moments_cpu(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every):
    _checks.check_fit_poly_moments_inputs(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every)
    fitted, trace = _kernels("cpu").fit_poly_moments(
        *(t.detach().numpy() for t in (power_sums, cross_sums, square_sum, coeffs)), lr, steps, record_every
    )
    return torch.from_numpy(fitted), torch.from_numpy(trace)


_CPU_IMPLS = {
    "poly": _poly_cpu,
    "poly_backward": _poly_backward_cpu,
    "poly_mse": _poly_mse_cpu,
    "dot": _dot_cpu,
    "dot_backward": _dot_backward_cpu,
    "fit_poly": _fit_poly_cpu,
    "poly_moments": _poly_moments_cpu,
    "fit_poly_moments": _fit_poly_moments_cpu,
}


def _cuda_impl(op: str):
    def impl(*args):
        return getattr(_kernels("gpu"), "torch_" + op)(*args)

    impl.__name__ = f"{op}_numba_cuda"
    return impl


for _op, _impl in _CPU_IMPLS.items():
    _LIBRARY.impl(PREFIX + _op, _impl, "CPU")
    _LIBRARY.impl(PREFIX + _op, _cuda_impl(_op), "CUDA")
_meta.register_fake_kernels(PREFIX, reduced_on_cuda=False)
_vmap.register_vmap_rules(PREFIX)
BACKEND = Backend.from_torch_ops("numba", PREFIX)
register_backend("numba", lambda: BACKEND)


def warmup(dtypes=(np.float32, np.float64), parallel: bool = True) -> dict[str, float]:
    """Compile (or load from numba's cache) every CPU kernel for ``dtypes`` (float32 and/or float64; NumPy or torch
    dtypes or their names) now, the parallel variants too unless ``parallel=False``; returns seconds per kernel."""
    try:
        dtypes = [np.dtype(str(d).removeprefix("torch.") if isinstance(d, torch.dtype) else d) for d in dtypes]
    except TypeError as error:
        raise TypeError(f"dtypes must be an iterable of float32/float64 dtypes, got {dtypes!r}") from error
    if not dtypes or any(d not in (np.float32, np.float64) for d in dtypes):
        raise ValueError(f"dtypes must name float32 and/or float64, got {[d.name for d in dtypes]}")
    if not isinstance(parallel, bool):
        raise TypeError(f"parallel must be a bool, got {type(parallel).__name__}")
    cpu = _kernels("cpu")
    seconds: dict[str, float] = {}
    saved_threshold = _config.PARALLEL_THRESHOLD
    try:
        for dtype in dtypes:
            x = np.linspace(0.0, 1.0, 16, dtype=dtype)
            coeffs = np.ones(3, dtype=dtype)
            calls = {
                "poly": lambda x=x, c=coeffs: cpu.poly(x, c),
                "poly_backward": lambda x=x, c=coeffs: cpu.poly_backward(x, x, c),
                "poly_mse": lambda x=x, c=coeffs: cpu.poly_mse(x, x, c),
                "dot": lambda x=x: cpu.dot(x, x),
                "dot_backward": lambda x=x: cpu.dot_backward(np.ones((), x.dtype), x, x),
            }
            for variant, threshold in (("serial", 1 << 62), ("parallel", 0))[: 2 if parallel else 1]:
                _config.PARALLEL_THRESHOLD = threshold
                for name, call in calls.items():
                    start = time.perf_counter()
                    call()
                    seconds[f"{name}[{np.dtype(dtype).name},{variant}]"] = time.perf_counter() - start
    finally:
        _config.PARALLEL_THRESHOLD = saved_threshold
    return seconds
