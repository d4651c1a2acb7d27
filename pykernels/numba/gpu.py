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
_MAX_MOMENT_SUMS = 3 * _config.CUDA_MAX_DEGREE + 3  # 2D+1 power sums, the square sum, D+1 cross sums
_MAX_TERMS = _config.CUDA_MAX_DEGREE + 1
_MAX_GRID_Y = 65535  # CUDA's limit on a grid's y dimension (the series loop strides over the rest)


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
def _poly_moments_partials(x, y, num_powers, num_cross, partials):
    """partials[b, block] = (sum x^p for p < num_powers, sum y^2, sum y x^k for k < num_cross) over the block's
    grid-stride share of series b; the grid's y dimension strides over the series. x is (B, N), or (1, N) shared,
    whose powers only series 0 sums (0 in the other rows). Powers as running products 1 x x ..., y x x ...."""
    sums = cuda.local.array(_MAX_MOMENT_SUMS, float64)
    scratch = cuda.shared.array(_MAX_THREADS, float64)
    num_sums = num_powers + 1 + num_cross
    for b in range(cuda.blockIdx.y, y.shape[0], cuda.gridDim.y):  # uniform in the block: the syncs below agree
        row = b if x.shape[0] > 1 else 0
        powers = num_powers if b < x.shape[0] else 0
        for s in range(num_sums):
            sums[s] = 0.0
        for i in range(cuda.grid(1), y.shape[1], cuda.gridsize(1)):
            xi = float64(x[row, i])
            term = 1.0
            for p in range(powers):
                sums[p] += term
                term *= xi
            yi = float64(y[b, i])
            sums[num_powers] += yi * yi
            term = yi
            for k in range(num_powers + 1, num_sums):
                sums[k] += term
                term *= xi
        for s in range(num_sums):
            total = _block_sum(scratch, sums[s])
            if cuda.threadIdx.x == 0:
                partials[b, cuda.blockIdx.x, s] = total


@cuda.jit
def _finish_rows(partials, out):
    """out[b, s] = sum over blocks of partials[b, block, s], blocks in order (one thread per output)."""
    t = cuda.grid(1)
    num_sums = out.shape[1]
    if t < out.shape[0] * num_sums:
        b, s = t // num_sums, t % num_sums
        total = 0.0
        for block in range(partials.shape[1]):
            total += partials[b, block, s]
        out[b, s] = total


@cuda.jit
def _fit_moments_kernel(power_sums, cross_sums, square_sum, init, lr, steps, record_every, coeffs, trace_t):
    """One thread per series b: from c = init[b] (or init[0] shared), `steps` times u = A c, c -= 2 lr (u - b),
    A[j, k] = power_sums[b, j + k] / N (or row 0 shared), b = cross_sums[b] / N, N = power_sums[.., 0];
    trace_t[s // record_every, b] = c.u - 2 c.b + s (before the update; transposed: the series' writes coalesce).
    Sums in the CPU kernels' order. coeffs[b] = the final c (in its dtype)."""
    series = cuda.grid(1)
    if series >= cross_sums.shape[0]:
        return
    terms = cross_sums.shape[1]
    row = series if power_sums.shape[0] > 1 else 0
    init_row = series if init.shape[0] > 1 else 0
    count = power_sums[row, 0]
    hankel = cuda.local.array(2 * _MAX_TERMS - 1, float64)
    target = cuda.local.array(_MAX_TERMS, float64)
    c = cuda.local.array(_MAX_TERMS, float64)
    u = cuda.local.array(_MAX_TERMS, float64)
    for p in range(2 * terms - 1):
        hankel[p] = power_sums[row, p] / count
    for k in range(terms):
        target[k] = cross_sums[series, k] / count
        c[k] = float64(init[init_row, k])
    offset = square_sum[series] / count
    step_size = 2.0 * lr
    until_record = 1
    record = 0
    for _ in range(steps):
        for j in range(terms):
            total = hankel[j] * c[0]
            for k in range(1, terms):
                total += hankel[j + k] * c[k]
            u[j] = total
        until_record -= 1
        if until_record == 0:
            quadratic = c[0] * u[0]
            linear = c[0] * target[0]
            for k in range(1, terms):
                quadratic += c[k] * u[k]
                linear += c[k] * target[k]
            trace_t[record, series] = quadratic - 2.0 * linear + offset
            record += 1
            until_record = record_every
        for k in range(terms):
            c[k] -= step_size * (u[k] - target[k])
    for k in range(terms):
        coeffs[series, k] = c[k]


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
    _check_degree_value(coeffs.shape[0] - 1)


def _check_degree_value(degree: int) -> None:
    if degree > _config.CUDA_MAX_DEGREE:
        raise ValueError(
            f"the numba CUDA kernels take degree <= {_config.CUDA_MAX_DEGREE}, got {degree} (use backend='cpp')"
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


def poly_moments_into(x, y, degree: int, totals, stream=0) -> None:
    """x (B, N) or (1, N) shared, y (B, N); totals (B, 3D+3) float64, row b: [sum x^p for p = 0..2D (in rows < x's,
    the others 0), sum y^2, sum y x^k for k = 0..D]."""
    _check_degree_value(degree)
    series, n = y.shape
    num_sums = 3 * degree + 3
    blocks, threads = _launch_shape(n)
    blocks = max(1, min(blocks, _config.CUDA_MAX_BLOCKS // series))  # the partials stay (B x <= MAX_BLOCKS) rows
    partials = cuda.device_array((series, blocks, num_sums), np.float64, stream=stream)
    _poly_moments_partials[(blocks, min(series, _MAX_GRID_Y)), threads, stream](
        x, y, 2 * degree + 1, degree + 1, partials
    )
    _finish_rows[math.ceil(series * num_sums / threads), threads, stream](partials, totals)


def fit_poly_moments_into(
    power_sums, cross_sums, square_sum, init, lr: float, steps: int, record_every: int, coeffs, trace_t, stream=0
) -> None:
    """power_sums (B or 1, 2D+1), cross_sums (B, D+1), square_sum (B,) float64; init (B or 1, D+1); outputs coeffs
    (B, D+1) and trace_t (T, B) (the trace transposed), in any float dtype."""
    _check_degree_value(cross_sums.shape[1] - 1)
    threads = _config.CUDA_THREADS_PER_BLOCK
    _fit_moments_kernel[max(1, math.ceil(cross_sums.shape[0] / threads)), threads, stream](
        power_sums, cross_sums, square_sum, init, lr, steps, record_every, coeffs, trace_t
    )


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


def _rows(t, columns: int):
    """Zero-copy numba view of a torch CUDA tensor as a contiguous (rows, columns) matrix."""
    return cuda.as_cuda_array(t.detach().reshape(-1, columns).contiguous())


def torch_poly_moments(x, y, degree):
    torch, checks = _torch()
    checks.check_poly_moments_inputs(x, y, degree)
    _check_degree_value(degree)
    n = y.shape[-1]
    series = y.numel() // n
    totals = torch.empty((series, 3 * degree + 3), dtype=torch.float64, device=y.device)
    with torch.cuda.device(y.device):
        poly_moments_into(_rows(x, n), _rows(y, n), degree, cuda.as_cuda_array(totals), _stream())
    powers = 2 * degree + 1
    sums = (
        totals[: x.numel() // n, :powers].reshape(*x.shape[:-1], powers),
        totals[:, powers + 1 :].reshape(*y.shape[:-1], degree + 1),
        totals[:, powers].reshape(y.shape[:-1]),
    )
    return tuple(t.clone(memory_format=torch.contiguous_format) for t in sums)


def torch_fit_poly_moments(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every):
    torch, checks = _torch()
    checks.check_fit_poly_moments_inputs(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every)
    terms = cross_sums.shape[-1]
    _check_degree_value(terms - 1)
    batch = cross_sums.shape[:-1]
    series = cross_sums.numel() // terms
    records = -(-steps // record_every)
    fitted = torch.empty((series, terms), dtype=coeffs.dtype, device=coeffs.device)
    # (at least one row: numba takes no empty device array; the kernel writes only the first `records`)
    trace_t = torch.empty((max(records, 1), series), dtype=coeffs.dtype, device=coeffs.device)
    if series == 0:  # (B = 0 fits: nothing to launch)
        return fitted.reshape(*batch, terms), trace_t[:records].t().contiguous().reshape(*batch, records)
    with torch.cuda.device(coeffs.device):
        fit_poly_moments_into(
            _rows(power_sums, 2 * terms - 1),
            _rows(cross_sums, terms),
            _view(square_sum),
            _rows(coeffs, terms),
            lr,
            steps,
            record_every,
            cuda.as_cuda_array(fitted),
            cuda.as_cuda_array(trace_t),
            _stream(),
        )
    return fitted.reshape(*batch, terms), trace_t[:records].t().contiguous().reshape(*batch, records)
