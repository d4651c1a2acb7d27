"""numba.cuda kernels of pykernels' ops (needs a GPU and numba's CUDA target, or ``NUMBA_ENABLE_CUDASIM=1``).

Grid-stride loops; per-thread float64 sums, reduced per block in shared memory, then one small kernel adds the
block partials in block order (deterministic, and no host synchronization: capture-safe). Device-array API
(anything with ``__cuda_array_interface__``: numba device arrays, torch CUDA tensors) plus the ``torch_<op>``
entry points used by the ``pykernels::numba_<op>`` ops, which launch on torch's current stream.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from . import _config

_MAX_THREADS = 1024  # shared-memory scratch size: the largest block CUDA allows
_MAX_SUMS = _config.CUDA_MAX_DEGREE + 2


@cuda.jit(device=True)
def _horner(coeffs, x):
    degree = coeffs.shape[0] - 1
    value = float64(coeffs[degree])
    for k in range(degree - 1, -1, -1):
        value = value * x + coeffs[k]
    return value


@cuda.jit(device=True)
def _block_sum(scratch, value):
    """Sum of `value` over the block (blockDim a power of two), returned to every thread."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    width = cuda.blockDim.x // 2
    while width > 0:
        if tid < width:
            scratch[tid] += scratch[tid + width]
        cuda.syncthreads()
        width //= 2
    total = scratch[0]
    cuda.syncthreads()
    return total


@cuda.jit
def _poly_kernel(x, coeffs, y):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        y[i] = _horner(coeffs, float64(x[i]))


@cuda.jit
def _poly_mse_partials(x, y, coeffs, partials):
    """partials[block] = (sum r^2, sum r x^k ...) over the block's grid-stride share."""
    sums = cuda.local.array(_MAX_SUMS, float64)
    num_sums = coeffs.shape[0] + 1
    for s in range(num_sums):
        sums[s] = 0.0
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        xi = float64(x[i])
        r = _horner(coeffs, xi) - y[i]
        sums[0] += r * r
        term = r
        for k in range(1, num_sums):
            sums[k] += term
            term *= xi
    scratch = cuda.shared.array(_MAX_THREADS, float64)
    for s in range(num_sums):
        total = _block_sum(scratch, sums[s])
        if cuda.threadIdx.x == 0:
            partials[cuda.blockIdx.x, s] = total


@cuda.jit
def _poly_backward_partials(grad_y, x, coeffs, grad_x, partials):
    sums = cuda.local.array(_MAX_SUMS, float64)
    num_sums = coeffs.shape[0]
    degree = num_sums - 1
    for s in range(num_sums):
        sums[s] = 0.0
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        xi = float64(x[i])
        g = float64(grad_y[i])
        derivative = 0.0  # p'(x) by Horner on (1 c_1, ..., D c_D), as every backend computes it
        if degree > 0:
            derivative = degree * float64(coeffs[degree])
        for k in range(degree - 1, 0, -1):
            derivative = derivative * xi + k * float64(coeffs[k])
        grad_x[i] = g * derivative
        term = g
        for k in range(num_sums):
            sums[k] += term
            term *= xi
    scratch = cuda.shared.array(_MAX_THREADS, float64)
    for s in range(num_sums):
        total = _block_sum(scratch, sums[s])
        if cuda.threadIdx.x == 0:
            partials[cuda.blockIdx.x, s] = total


@cuda.jit
def _dot_partials(a, b, partials):
    total = 0.0
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        total += float64(a[i]) * float64(b[i])
    scratch = cuda.shared.array(_MAX_THREADS, float64)
    total = _block_sum(scratch, total)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x, 0] = total


@cuda.jit
def _finish(partials, scales, out):
    """out[s] = scales[s] * sum over blocks of partials[b, s], blocks in order (one thread per output)."""
    s = cuda.threadIdx.x
    if s < out.shape[0]:
        total = 0.0
        for block in range(partials.shape[0]):
            total += partials[block, s]
        out[s] = total * scales[s]


@cuda.jit
def _scale_kernel(grad, source, out):
    g = grad[0]
    for i in range(cuda.grid(1), source.shape[0], cuda.gridsize(1)):
        out[i] = g * source[i]


def _launch_shape(n: int) -> tuple[int, int]:
    threads = _config.CUDA_THREADS_PER_BLOCK
    if threads & (threads - 1) or not 1 <= threads <= _MAX_THREADS:
        raise ValueError(f"CUDA_THREADS_PER_BLOCK must be a power of two <= {_MAX_THREADS}, got {threads}")
    return max(1, min(_config.CUDA_MAX_BLOCKS, math.ceil(n / threads))), threads


def _check_degree(coeffs) -> None:
    if coeffs.shape[0] - 1 > _config.CUDA_MAX_DEGREE:
        raise ValueError(
            f"the numba CUDA kernels take degree <= {_config.CUDA_MAX_DEGREE}, got "
            f"{coeffs.shape[0] - 1} (use backend='cpp')"
        )


def _reduce(kernel, n: int, num_sums: int, scales, out, stream, *args) -> None:
    blocks, threads = _launch_shape(n)
    partials = cuda.device_array((blocks, num_sums), np.float64, stream=stream)
    kernel[blocks, threads, stream](*args, partials)
    _finish[1, max(32, 1 << (num_sums - 1).bit_length()), stream](partials, scales, out)


# --- device-array API: inputs and outputs are device arrays (or __cuda_array_interface__ objects) -------------------


def poly_into(x, coeffs, y, stream=0) -> None:
    blocks, threads = _launch_shape(x.shape[0])
    _poly_kernel[blocks, threads, stream](x, coeffs, y)


def poly_mse_into(x, y, coeffs, out, stream=0) -> None:
    """out (D+2,): [loss, grad_0, ..., grad_D]."""
    _check_degree(coeffs)
    n = x.shape[0]
    scales = cuda.to_device(np.array([1.0 / n] + [2.0 / n] * coeffs.shape[0]), stream=stream)
    _reduce(_poly_mse_partials, n, coeffs.shape[0] + 1, scales, out, stream, x, y, coeffs)


def poly_backward_into(grad_y, x, coeffs, grad_x, grad_coeffs, stream=0) -> None:
    _check_degree(coeffs)
    scales = cuda.to_device(np.ones(coeffs.shape[0]), stream=stream)
    _reduce(
        _poly_backward_partials, x.shape[0], coeffs.shape[0], scales, grad_coeffs, stream, grad_y, x, coeffs, grad_x
    )


def dot_into(a, b, out, stream=0) -> None:
    scales = cuda.to_device(np.ones(1), stream=stream)
    _reduce(_dot_partials, a.shape[0], 1, scales, out, stream, a, b)


def dot_backward_into(grad, a, b, grad_a, grad_b, stream=0) -> None:
    blocks, threads = _launch_shape(a.shape[0])
    _scale_kernel[blocks, threads, stream](grad, b, grad_a)
    _scale_kernel[blocks, threads, stream](grad, a, grad_b)


# --- torch entry points (pykernels::numba_<op> on CUDA tensors) ------------------------------------------------------


def _torch():
    import torch

    from .. import _checks

    return torch, _checks


def _view(t):
    """Zero-copy numba view of a torch CUDA tensor, flattened and contiguous (a copy only if it was not)."""
    return cuda.as_cuda_array(t.detach().reshape(-1).contiguous())


def _stream():
    torch, _ = _torch()
    return cuda.external_stream(torch.cuda.current_stream().cuda_stream)


def torch_poly(x, coeffs):
    torch, checks = _torch()
    checks.check_poly_inputs(x, coeffs)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with torch.cuda.device(x.device):
        poly_into(_view(x), _view(coeffs), _view(y), _stream())
    return y


def torch_poly_mse(x, y, coeffs):
    torch, checks = _torch()
    checks.check_poly_mse_inputs(x, y, coeffs)
    out = torch.empty(coeffs.numel() + 1, dtype=torch.float64, device=x.device)
    with torch.cuda.device(x.device):
        poly_mse_into(_view(x), _view(y), _view(coeffs), _view(out), _stream())
    out = out.to(x.dtype)
    return out[0].clone(), out[1:].clone()


def torch_poly_backward(grad_y, x, coeffs):
    torch, checks = _torch()
    checks.check_poly_backward_inputs(grad_y, x, coeffs)
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    grad_coeffs = torch.empty(coeffs.numel(), dtype=torch.float64, device=x.device)
    with torch.cuda.device(x.device):
        poly_backward_into(_view(grad_y), _view(x), _view(coeffs), _view(grad_x), _view(grad_coeffs), _stream())
    return grad_x, grad_coeffs.to(x.dtype)


def torch_dot(a, b):
    torch, checks = _torch()
    checks.check_dot_inputs(a, b)
    out = torch.empty(1, dtype=torch.float64, device=a.device)
    with torch.cuda.device(a.device):
        dot_into(_view(a), _view(b), _view(out), _stream())
    return out.to(a.dtype).reshape(())


def torch_dot_backward(grad, a, b):
    torch, checks = _torch()
    checks.check_dot_backward_inputs(grad, a, b)
    grad_a, grad_b = torch.empty_like(b, memory_format=torch.contiguous_format), torch.empty_like(a)
    with torch.cuda.device(a.device):
        dot_backward_into(_view(grad), _view(a), _view(b), _view(grad_a), _view(grad_b), _stream())
    return grad_a, grad_b


def torch_fit_poly(x, y, coeffs, lr, steps, record_every):
    raise NotImplementedError("fit_poly has no numba CUDA kernel; use backend='cpp' on CUDA tensors")
