"""numba CPU kernels of pykernels' ops, on NumPy arrays (float32 or float64, contiguous).

Every reduction works like the C++ kernels: fixed chunks of ``REDUCE_CHUNK`` elements summed in float64, chunk
results combined in order with Kahan-Babuska summation (compiled without fast-math, which could delete it). Float64
data's ``dot`` and ``poly_mse`` are summed to twice the working precision (Dot2, compensated Horner), as in C++.
Products are rounded on their own (no contraction into FMAs) but where float32 data is computed in float64
(``_mul_add``): the semantics of csrc/common/poly_math.h.
``*_serial`` and ``*_parallel`` (``prange`` over chunks) call the same chunk function, so they agree bit for bit.
All kernels are ``cache=True``; nothing compiles at import (no eager signatures).
"""

from __future__ import annotations

import threading
import types

import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import cgutils
from numba.core import types as numba_types
from numba.extending import intrinsic

from . import _cache, _config
from ._cache import njit  # numba's, with a cache that recovers from a damaged file

_cache.ensure_cache_dir()  # before the first @njit(cache=True): a read-only install must still import

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_PARALLEL_JIT = {**_JIT, "parallel": True}


def _serial_and_parallel(chunk_loop):
    """The (serial, parallel) compilations of one loop over chunks written with ``prange``, which a serial njit
    runs as ``range``: one body, so both variants agree bit for bit. numba's on-disk cache keys a function by its
    qualified name and bytecode, not by its flags, so the parallel variant compiles a copy under its own name
    (sharing one function, either variant could load the other's machine code from the cache)."""
    parallel_loop = types.FunctionType(
        chunk_loop.__code__, chunk_loop.__globals__, chunk_loop.__name__ + "_parallel", chunk_loop.__defaults__
    )
    parallel_loop.__qualname__ = chunk_loop.__qualname__ + "_parallel"
    parallel_loop.__module__ = chunk_loop.__module__
    parallel_loop.__doc__ = chunk_loop.__doc__
    return njit(**_JIT)(chunk_loop), njit(**_PARALLEL_JIT)(parallel_loop)


# Elements per block inside a chunk: a module constant (numba freezes it), small enough for L1. Each step of
# a block is a simple loop over it, which LLVM vectorizes.
BLOCK = 256
# Only the in-chunk float64 sums may be reassociated (so LLVM can vectorize them): that reorders float64
# additions of <= REDUCE_CHUNK terms, which costs nothing in float32 results. No contraction: a product fused into
# the add it feeds keeps finite what overflows when rounded, as torch rounds it (see _mul_add). The compensated
# combination of chunks (_combine_chunks) and the twice-working-precision kernels are compiled without any
# fast-math flag, so they stay exact.
_SUM_JIT = {**_JIT, "fastmath": {"reassoc"}}
# Lanes of the twice-working-precision sums kept across blocks: one SIMD register's worth of independent sums.
LANES = 8


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma), in float64."""
    signature = numba_types.float64(numba_types.float64, numba_types.float64, numba_types.float64)

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return signature, codegen


@intrinsic
def _mul_add(typingctx, a, b, c, data):
    """a * b + c in float64, the product rounded on its own unless `data` (the array the operands come from) is
    float32: float32 values are far below float64's range, so fusing cannot change an overflow there
    (csrc/common/poly_math.h: kMayFuse), and the FMA is faster."""
    signature = numba_types.float64(numba_types.float64, numba_types.float64, numba_types.float64, data)
    fuse = getattr(data, "dtype", data) == numba_types.float32

    def codegen(context, builder, sig, args):
        a, b, c, _ = args
        return builder.fma(a, b, c) if fuse else builder.fadd(builder.fmul(a, b), c)

    return signature, codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Asks for the cache line of array[index] ahead of its use (llvm.prefetch: a hint, which never faults, so an
    index past the end is harmless). Lets a loop whose arithmetic hides its loads' latency keep memory busy."""
    signature = numba_types.void(array, index)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32])
        prefetch = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0")
        address = builder.bitcast(builder.gep(data, [args[1]]), byte_pointer)
        builder.call(prefetch, [address, int32(0), int32(3), int32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return signature, codegen


@njit(**_JIT)
def _two_sum(a, b):
    """(value, error) with a + b = value + error exactly (Knuth's TwoSum; finite a, b)."""
    value = a + b
    b_part = value - a
    return value, (a - (value - b_part)) + (b - b_part)


@njit(**_JIT)
def _two_product(a, b):
    """(value, error) with a * b = value + error exactly (barring underflow)."""
    value = a * b
    return value, _fma(a, b, -value)


@njit(**_SUM_JIT)
def _load_block(data, i, fill, out):
    """out = data[i:i+BLOCK] widened to float64, past the end filled with `fill` (the chunk's ragged tail).
    Loops index slices from 0: numba then knows no index is negative and vectorizes (with a runtime start
    index it keeps a wraparound check per element)."""
    block = data[i : i + BLOCK]
    for j in range(block.shape[0]):
        out[j] = block[j]
    for j in range(block.shape[0], BLOCK):
        out[j] = fill


@njit(**_SUM_JIT)
def _horner_block(coeffs, xs, values, data):
    """values[j] = p(xs[j]) by Horner; xs: a block of `data`, widened."""
    degree = coeffs.shape[0] - 1
    for j in range(BLOCK):
        values[j] = coeffs[degree]
    for k in range(degree - 1, -1, -1):
        c = np.float64(coeffs[k])
        for j in range(BLOCK):
            values[j] = _mul_add(values[j], xs[j], c, data)


@njit(**_JIT)
def _horner_tuple(coeffs, xi, data):
    """p(xi) by Horner on a tuple of float64 coefficients (c_0, ..., c_D); xi: an element of `data`, widened."""
    value = coeffs[len(coeffs) - 1]
    for k in range(len(coeffs) - 2, -1, -1):
        value = _mul_add(value, xi, coeffs[k], data)
    return value


@njit(**_SUM_JIT)
def _accumulate_power_block(sums, first, xs, weights, term):
    """sums[first + k] += sum_j weights[j] * xs[j]**k for every remaining k (term: a BLOCK scratch)."""
    for j in range(BLOCK):
        term[j] = weights[j]
    for k in range(first, sums.shape[0]):
        total = 0.0
        for j in range(BLOCK):
            total += term[j]
            term[j] *= xs[j]
        sums[k] += total


@njit(**_JIT)
def _compensated_add(total, compensation, value):
    """One Kahan-Babuska (Neumaier) step: (total, compensation) += value."""
    t = total + value
    if abs(total) >= abs(value):
        compensation += (total - t) + value
    else:
        compensation += (value - t) + total
    return t, compensation


@njit(**_JIT)
def _combine(partials, out, parts):
    """The sums over chunks of partials[c, s * parts : (s + 1) * parts], in chunk order, Kahan-Babuska compensated:
    out[s] = the sum (parts = 1), or (out[2 s], out[2 s + 1]) = its (value, error) pair (parts = 2), the error 0
    where the value is not finite or the error is not (the error terms overflowed on their own: the plain sum)."""
    for s in range(partials.shape[1] // parts):
        total = 0.0
        compensation = 0.0
        for c in range(partials.shape[0]):
            for part in range(parts):
                total, compensation = _compensated_add(total, compensation, partials[c, s * parts + part])
        if parts == 1:
            out[s] = total + compensation if np.isfinite(total) else total
        else:
            out[2 * s] = total
            out[2 * s + 1] = compensation if np.isfinite(total) and np.isfinite(compensation) else 0.0


@njit(**_JIT)
def _combine_chunks(partials, out):
    """out[s] = sum over chunks of partials[c, s], in chunk order, Kahan-Babuska compensated."""
    _combine(partials, out, 1)


@njit(**_JIT)
def _combine_chunk_pairs(partials, out):
    """The twice-working-precision kernels' chunks: partials[c, 2 s], partials[c, 2 s + 1] is chunk c's (value,
    error) pair of sum s; out[2 s], out[2 s + 1] the pair of their total."""
    _combine(partials, out, 2)


# --- twice the working precision (float64 data): Dot2 and compensated Horner -----------------------------------------


@njit(**_JIT)
def _fold_pairwise(values, errors, width, target):
    """values[:target] + errors[:target] = the sum of values[:width] + errors[:width] (width / target a power of two):
    a pairwise tree of TwoSums whose every level adds one half to the other elementwise (so it vectorizes), the
    errors plainly."""
    while width > target:
        width //= 2
        for j in range(width):
            value, error = _two_sum(values[j], values[j + width])
            values[j] = value
            errors[j] += errors[j + width] + error


@njit(**_JIT)
def _add_block_accurately(totals, compensations, s, values, errors):
    """(totals[s], compensations[s]) += the sum of a block's values[j] + errors[j] (destroyed), by _fold_pairwise:
    accurate to u |sum| + O(log2(BLOCK) u^2 sum |values|), as Dot2 (Ogita, Rump and Oishi)."""
    _fold_pairwise(values, errors, values.shape[0], 1)
    total, error = _two_sum(totals[s], values[0])
    totals[s] = total
    compensations[s] += error + errors[0]


@njit(**_JIT)
def _write_pairs(totals, compensations, out):
    """out[2 s], out[2 s + 1] = the (value, error) pair of sum s, the error 0 where the value is not finite."""
    for s in range(totals.shape[0]):
        out[2 * s] = totals[s]
        finite = np.isfinite(totals[s]) and np.isfinite(compensations[s])  # (see _combine)
        out[2 * s + 1] = compensations[s] if finite else 0.0


@njit(**_JIT)
def _accurate_mean(value, error, n):
    """(value + error) / n, correctly rounded but for the pair's own error (the quotient's remainder is exact)."""
    quotient = value / n
    if not np.isfinite(quotient):
        return quotient
    return quotient + (_fma(-quotient, np.float64(n), value) + error) / n


@njit(**_JIT)
def _products_of_block(a, b, values, errors):
    """values[j] + errors[j] = a[j] b[j] + a[j + H] b[j + H] for j < H = BLOCK / 2, exactly but for the rounding of
    errors: a block's products as the first level of _add_block_accurately's tree."""
    half = BLOCK // 2
    for j in range(half):
        product, product_error = _two_product(np.float64(a[j]), np.float64(b[j]))
        other, other_error = _two_product(np.float64(a[j + half]), np.float64(b[j + half]))
        values[j], sum_error = _two_sum(product, other)
        errors[j] = (product_error + other_error) + sum_error


@njit(**_JIT)
def _add_halves(values, errors, width, lane_values, lane_errors):
    """Folds values[:width] + errors[:width] (destroyed) down to LANES elements by the pairwise TwoSum tree, then
    adds them lane by lane into (lane_values, lane_errors) with TwoSums."""
    _fold_pairwise(values, errors, width, LANES)
    for j in range(LANES):
        value, error = _two_sum(lane_values[j], values[j])
        lane_values[j] = value
        lane_errors[j] += errors[j] + error


@njit(**_JIT)
def _dot_chunk_accurate(a, b, out):
    """One chunk of float64 dot as Dot2 (exact products, sums to twice the working precision): out = its (value,
    error) pair. Full blocks are read in place; the ragged tail is padded with zeros."""
    values = np.empty(BLOCK // 2)
    errors = np.empty(BLOCK // 2)
    lane_values = np.zeros(LANES)
    lane_errors = np.zeros(LANES)
    full = a.shape[0] - a.shape[0] % BLOCK
    for i in range(0, full, BLOCK):
        # two blocks ahead, a line at a time: the loads of a block are otherwise spread across its arithmetic, and
        # too few are in flight to stream memory (measured: 1.6x faster at 10^7)
        for line in range(0, BLOCK, 64 // a.itemsize):
            _prefetch(a, i + 2 * BLOCK + line)
            _prefetch(b, i + 2 * BLOCK + line)
        _products_of_block(a[i : i + BLOCK], b[i : i + BLOCK], values, errors)
        _add_halves(values, errors, BLOCK // 2, lane_values, lane_errors)
    if full < a.shape[0]:
        xs = np.empty(BLOCK)
        ys = np.empty(BLOCK)
        _load_block(a, full, 0.0, xs)
        _load_block(b, full, 0.0, ys)
        _products_of_block(xs, ys, values, errors)
        _add_halves(values, errors, BLOCK // 2, lane_values, lane_errors)
    totals = np.zeros(1)
    compensations = np.zeros(1)
    _add_block_accurately(totals, compensations, 0, lane_values, lane_errors)
    _write_pairs(totals, compensations, out)


@njit(**_JIT)
def _compensated_residual_block(coeffs, xs, ys, hi, lo):
    """hi[j] + lo[j] = p(xs[j]) - ys[j] to about twice the working precision: compensated Horner (Graillat, Langlois
    and Louvet), whose error term carries every step's rounding errors through the remaining steps, then an exact
    subtraction."""
    degree = coeffs.shape[0] - 1
    for j in range(BLOCK):
        hi[j] = coeffs[degree]
        lo[j] = 0.0
    for k in range(degree - 1, -1, -1):
        c = np.float64(coeffs[k])
        for j in range(BLOCK):
            product, product_error = _two_product(hi[j], xs[j])
            hi[j], sum_error = _two_sum(product, c)
            lo[j] = lo[j] * xs[j] + (product_error + sum_error)
    for j in range(BLOCK):  # renormalized, |lo| <= ulp(hi) / 2, even where the subtraction cancels
        difference, difference_error = _two_sum(hi[j], -ys[j])
        low = difference_error + lo[j]
        residual, residual_error = _two_sum(difference, low)
        # else the residual alone, as the reference forms it: its errors are NaN, or the error term overflowed on
        # its own where Horner cancels
        finite = (difference - difference == 0.0) & (low - low == 0.0)
        hi[j] = residual if finite else difference
        lo[j] = residual_error if finite else 0.0


@njit(**_JIT)
def _poly_mse_chunk_accurate(x, y, coeffs, out):
    """One chunk of poly_mse for float64 data, to twice the working precision: out[2 s], out[2 s + 1] is the
    (value, error) pair of sum r^2 (s = 0) and of sum r x^k (s = 1 + k), r = p(x) - y = hi + lo and r x^k to twice
    the working precision. In L1 blocks, each step a simple loop over the block."""
    num_sums = coeffs.shape[0] + 1
    totals = np.zeros(num_sums)
    compensations = np.zeros(num_sums)
    xs = np.empty(BLOCK)
    ys = np.empty(BLOCK)
    hi = np.empty(BLOCK)
    lo = np.empty(BLOCK)
    values = np.empty(BLOCK)
    errors = np.empty(BLOCK)
    for i in range(0, x.shape[0], BLOCK):
        _load_block(x, i, 0.0, xs)
        _load_block(y, i, 0.0, ys)
        _compensated_residual_block(coeffs, xs, ys, hi, lo)
        for j in range(min(BLOCK, x.shape[0] - i), BLOCK):
            hi[j] = 0.0  # the padding adds nothing, whatever p(0) is
            lo[j] = 0.0
        for j in range(BLOCK):  # r^2 = hi^2 + 2 hi lo (+ lo^2, below the error)
            values[j], errors[j] = _two_product(hi[j], hi[j])
            errors[j] += 2.0 * hi[j] * lo[j]
        _add_block_accurately(totals, compensations, 0, values, errors)
        # r x^k = hi + lo, as the reference forms it: a running product (inf x^k is inf where x^k underflows)
        for k in range(1, num_sums):
            for j in range(BLOCK):
                values[j] = hi[j]
                errors[j] = lo[j]
                hi[j], product_error = _two_product(hi[j], xs[j])
                lo[j] = product_error + lo[j] * xs[j]
            _add_block_accurately(totals, compensations, k, values, errors)
    _write_pairs(totals, compensations, out)


# --- poly_mse: out[0] = sum r^2, out[1 + k] = sum r x^k, r = p(x) - y ------------------------------------------


@njit(**_SUM_JIT)
def _poly_mse_chunk_blocked(x, y, coeffs, out):
    """Any degree: L1 blocks, one simple (vectorized) loop per Horner step and per power."""
    out[:] = 0.0
    xs = np.empty(BLOCK)
    residuals = np.empty(BLOCK)
    term = np.empty(BLOCK)
    for i in range(0, x.shape[0], BLOCK):
        _load_block(x, i, 0.0, xs)
        _load_block(y, i, 0.0, term)
        _horner_block(coeffs, xs, residuals, x)
        for j in range(BLOCK):
            residuals[j] -= term[j]
        for j in range(min(BLOCK, x.shape[0] - i), BLOCK):
            residuals[j] = 0.0  # the padding adds nothing, whatever p(0) is (not finite if a coefficient is not)
        total = 0.0
        for j in range(BLOCK):
            total += residuals[j] * residuals[j]
        out[0] += total
        _accumulate_power_block(out, 1, xs, residuals, term)


@njit(**_JIT)
def _padded_coefficient(coeffs, k):
    """c_k, or 0 above the degree: a degree-D polynomial evaluated as one of degree 4 or 8. Horner over leading
    zeros returns c_D exactly for finite x only (0 x is NaN for an infinite or NaN x), so these kernels also return
    whether every x was finite (summing 0 x, NaN for any other), and the callers redo the chunk with the blocked
    kernels, whose Horner starts at c_D, where one was not."""
    return np.float64(coeffs[k]) if k < coeffs.shape[0] else 0.0


@njit(**_SUM_JIT)
def _poly_mse_chunk_degree4(x, y, coeffs, out):
    """Degrees <= 4: every sum a scalar, so they stay in registers and the loop vectorizes across points. Returns
    whether every x was finite (see _padded_coefficient)."""
    c0, c1, c2 = _padded_coefficient(coeffs, 0), _padded_coefficient(coeffs, 1), _padded_coefficient(coeffs, 2)
    c3, c4 = _padded_coefficient(coeffs, 3), _padded_coefficient(coeffs, 4)
    s = g0 = g1 = g2 = g3 = g4 = probe = 0.0
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        probe += xi * 0.0
        r = _horner_tuple((c0, c1, c2, c3, c4), xi, x) - y[i]
        s += r * r
        g0 += r
        t = r * xi
        g1 += t
        t *= xi
        g2 += t
        t *= xi
        g3 += t
        g4 += t * xi
    sums = (s, g0, g1, g2, g3, g4)
    for k in range(out.shape[0]):
        out[k] = sums[k]
    return probe == 0.0


@njit(**_SUM_JIT)
def _poly_mse_chunk_degree8(x, y, coeffs, out):
    """Degrees 5 to 8: as _poly_mse_chunk_degree4, with nine coefficients."""
    c0, c1, c2 = _padded_coefficient(coeffs, 0), _padded_coefficient(coeffs, 1), _padded_coefficient(coeffs, 2)
    c3, c4, c5 = _padded_coefficient(coeffs, 3), _padded_coefficient(coeffs, 4), _padded_coefficient(coeffs, 5)
    c6, c7, c8 = _padded_coefficient(coeffs, 6), _padded_coefficient(coeffs, 7), _padded_coefficient(coeffs, 8)
    s = g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = g8 = probe = 0.0
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        probe += xi * 0.0
        r = _horner_tuple((c0, c1, c2, c3, c4, c5, c6, c7, c8), xi, x) - y[i]
        s += r * r
        g0 += r
        t = r * xi
        g1 += t
        t *= xi
        g2 += t
        t *= xi
        g3 += t
        t *= xi
        g4 += t
        t *= xi
        g5 += t
        t *= xi
        g6 += t
        t *= xi
        g7 += t
        g8 += t * xi
    sums = (s, g0, g1, g2, g3, g4, g5, g6, g7, g8)
    for k in range(out.shape[0]):
        out[k] = sums[k]
    return probe == 0.0


@njit(**_JIT)
def _poly_mse_chunk(x, y, coeffs, out):
    """One chunk of poly_mse: out[0] = sum r^2, out[1 + k] = sum r x^k, r = p(x) - y (float64 sums). numba cannot
    keep a runtime number of sums in registers, so degrees up to 8 run kernels with a fixed number of them (exact
    for finite x: see _padded_coefficient)."""
    degree = coeffs.shape[0] - 1
    exact = False
    if degree <= 4:
        exact = _poly_mse_chunk_degree4(x, y, coeffs, out)
    elif degree <= 8:
        exact = _poly_mse_chunk_degree8(x, y, coeffs, out)
    if not exact:
        _poly_mse_chunk_blocked(x, y, coeffs, out)


def _poly_mse_chunks(x, y, coeffs, chunk, loss, grad):
    """loss[0] = 1/N sum r^2, grad[k] = 2/N sum r x^k (written in the outputs' dtype)."""
    n = x.shape[0]
    num_chunks = max(1, (n + chunk - 1) // chunk)
    partials = np.empty((num_chunks, coeffs.shape[0] + 1))
    for c in prange(num_chunks):
        _poly_mse_chunk(x[c * chunk : (c + 1) * chunk], y[c * chunk : (c + 1) * chunk], coeffs, partials[c])
    sums = np.empty(coeffs.shape[0] + 1)
    _combine_chunks(partials, sums)
    loss[0] = sums[0] / n
    for k in range(grad.shape[0]):
        grad[k] = 2.0 / n * sums[k + 1]


_poly_mse_serial, _poly_mse_parallel = _serial_and_parallel(_poly_mse_chunks)


def _poly_mse_accurate_chunks(x, y, coeffs, chunk, loss, grad):
    """_poly_mse_chunks for float64 data, to twice the working precision (see _poly_mse_chunk_accurate)."""
    n = x.shape[0]
    num_chunks = max(1, (n + chunk - 1) // chunk)
    partials = np.empty((num_chunks, 2 * (coeffs.shape[0] + 1)))
    for c in prange(num_chunks):
        _poly_mse_chunk_accurate(x[c * chunk : (c + 1) * chunk], y[c * chunk : (c + 1) * chunk], coeffs, partials[c])
    pairs = np.empty(2 * (coeffs.shape[0] + 1))
    _combine_chunk_pairs(partials, pairs)
    loss[0] = _accurate_mean(pairs[0], pairs[1], n)
    for k in range(grad.shape[0]):
        grad[k] = 2.0 * _accurate_mean(pairs[2 + 2 * k], pairs[3 + 2 * k], n)


_poly_mse_accurate_serial, _poly_mse_accurate_parallel = _serial_and_parallel(_poly_mse_accurate_chunks)


# --- poly_backward: grad_x = g p'(x); out[k] = sum g x^k ---------------------------------------------------------


@njit(**_SUM_JIT)
def _poly_backward_chunk_blocked(grad_y, x, coeffs, grad_x, out):
    """Any degree: L1 blocks, as _poly_mse_chunk_blocked."""
    degree = coeffs.shape[0] - 1
    out[:] = 0.0
    xs = np.empty(BLOCK)
    grads = np.empty(BLOCK)
    derivatives = np.empty(BLOCK)
    term = np.empty(BLOCK)
    derivative_coeffs = np.empty(max(degree, 1))  # p' by Horner on (1 c_1, ..., D c_D)
    for k in range(1, degree + 1):
        derivative_coeffs[k - 1] = k * np.float64(coeffs[k])
    for i in range(0, x.shape[0], BLOCK):
        _load_block(x, i, 0.0, xs)
        _load_block(grad_y, i, 0.0, grads)  # padding weighs 0
        if degree == 0:
            derivatives[:] = 0.0
        else:
            _horner_block(derivative_coeffs, xs, derivatives, x)
        grad_block = grad_x[i : i + BLOCK]
        for j in range(grad_block.shape[0]):
            grad_block[j] = grads[j] * derivatives[j]
        _accumulate_power_block(out, 0, xs, grads, term)


@njit(**_SUM_JIT)
def _poly_backward_chunk_degree4(grad_y, x, coeffs, grad_x, out):
    """Degrees <= 4 with scalar sums (see _poly_mse_chunk_degree4); p'(x) by Horner on k c_k."""
    c1, c2 = _padded_coefficient(coeffs, 1), 2 * _padded_coefficient(coeffs, 2)
    c3, c4 = 3 * _padded_coefficient(coeffs, 3), 4 * _padded_coefficient(coeffs, 4)
    g0 = g1 = g2 = g3 = g4 = probe = 0.0
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        probe += xi * 0.0
        gi = np.float64(grad_y[i])
        grad_x[i] = gi * _horner_tuple((c1, c2, c3, c4), xi, x)
        g0 += gi
        t = gi * xi
        g1 += t
        t *= xi
        g2 += t
        t *= xi
        g3 += t
        g4 += t * xi
    sums = (g0, g1, g2, g3, g4)
    for k in range(out.shape[0]):
        out[k] = sums[k]
    return probe == 0.0


@njit(**_SUM_JIT)
def _poly_backward_chunk_degree8(grad_y, x, coeffs, grad_x, out):
    """Degrees 5 to 8, as _poly_backward_chunk_degree4."""
    c1, c2 = _padded_coefficient(coeffs, 1), 2 * _padded_coefficient(coeffs, 2)
    c3, c4 = 3 * _padded_coefficient(coeffs, 3), 4 * _padded_coefficient(coeffs, 4)
    c5, c6 = 5 * _padded_coefficient(coeffs, 5), 6 * _padded_coefficient(coeffs, 6)
    c7, c8 = 7 * _padded_coefficient(coeffs, 7), 8 * _padded_coefficient(coeffs, 8)
    g0 = g1 = g2 = g3 = g4 = g5 = g6 = g7 = g8 = probe = 0.0
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        probe += xi * 0.0
        gi = np.float64(grad_y[i])
        grad_x[i] = gi * _horner_tuple((c1, c2, c3, c4, c5, c6, c7, c8), xi, x)
        g0 += gi
        t = gi * xi
        g1 += t
        t *= xi
        g2 += t
        t *= xi
        g3 += t
        t *= xi
        g4 += t
        t *= xi
        g5 += t
        t *= xi
        g6 += t
        t *= xi
        g7 += t
        g8 += t * xi
    sums = (g0, g1, g2, g3, g4, g5, g6, g7, g8)
    for k in range(out.shape[0]):
        out[k] = sums[k]
    return probe == 0.0


@njit(**_JIT)
def _poly_backward_chunk(grad_y, x, coeffs, grad_x, out):
    """One chunk of poly_backward: grad_x = g p'(x) (written), out[k] = sum g x^k (float64 sums)."""
    degree = coeffs.shape[0] - 1
    exact = False
    if degree <= 4:
        exact = _poly_backward_chunk_degree4(grad_y, x, coeffs, grad_x, out)
    elif degree <= 8:
        exact = _poly_backward_chunk_degree8(grad_y, x, coeffs, grad_x, out)
    if not exact:  # (grad_x and the sums are written again)
        _poly_backward_chunk_blocked(grad_y, x, coeffs, grad_x, out)


def _poly_backward_chunks(grad_y, x, coeffs, chunk, grad_x, grad_coeffs):
    n = x.shape[0]
    num_chunks = max(1, (n + chunk - 1) // chunk)
    partials = np.empty((num_chunks, coeffs.shape[0]))
    for c in prange(num_chunks):
        _poly_backward_chunk(
            grad_y[c * chunk : (c + 1) * chunk],
            x[c * chunk : (c + 1) * chunk],
            coeffs,
            grad_x[c * chunk : (c + 1) * chunk],
            partials[c],
        )
    sums = np.empty(coeffs.shape[0])
    _combine_chunks(partials, sums)
    for k in range(grad_coeffs.shape[0]):
        grad_coeffs[k] = sums[k]


_poly_backward_serial, _poly_backward_parallel = _serial_and_parallel(_poly_backward_chunks)


# --- poly: y = p(x), elementwise ----------------------------------------------------------------------------------


@njit(**_JIT)
def _poly_range(x, coeffs, out):
    degree = coeffs.shape[0] - 1
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        value = np.float64(coeffs[degree])
        for k in range(degree - 1, -1, -1):
            value = _mul_add(value, xi, np.float64(coeffs[k]), x)
        out[i] = value


def _poly_chunks(x, coeffs, chunk, out):
    n = x.shape[0]
    for c in prange((n + chunk - 1) // chunk):
        _poly_range(x[c * chunk : (c + 1) * chunk], coeffs, out[c * chunk : (c + 1) * chunk])


_poly_serial, _poly_parallel = _serial_and_parallel(_poly_chunks)


# --- dot ------------------------------------------------------------------------------------------------------------


@njit(**_SUM_JIT)
def _dot_chunk(a, b, out):
    total = 0.0
    for i in range(a.shape[0]):
        total += np.float64(a[i]) * np.float64(b[i])
    out[0] = total


def _dot_chunks(a, b, chunk, out):
    n = a.shape[0]
    num_chunks = max(1, (n + chunk - 1) // chunk)
    partials = np.empty((num_chunks, 1))
    for c in prange(num_chunks):
        _dot_chunk(a[c * chunk : (c + 1) * chunk], b[c * chunk : (c + 1) * chunk], partials[c])
    total = np.empty(1)
    _combine_chunks(partials, total)
    out[0] = total[0]


_dot_serial, _dot_parallel = _serial_and_parallel(_dot_chunks)


def _dot_accurate_chunks(a, b, chunk, out):
    """out[0] = sum_i a_i b_i for float64 data, by Dot2: correctly rounded but for ill-conditioned data."""
    n = a.shape[0]
    num_chunks = max(1, (n + chunk - 1) // chunk)
    partials = np.empty((num_chunks, 2))
    for c in prange(num_chunks):
        _dot_chunk_accurate(a[c * chunk : (c + 1) * chunk], b[c * chunk : (c + 1) * chunk], partials[c])
    pair = np.empty(2)
    _combine_chunk_pairs(partials, pair)
    out[0] = pair[0] + pair[1]


_dot_accurate_serial, _dot_accurate_parallel = _serial_and_parallel(_dot_accurate_chunks)


# --- fit_poly: `steps` gradient-descent steps on poly_mse, in one compiled call ---------------------------------------


@njit(**_JIT)
def _fit_one(x, y, coeffs, lr, steps, record_every, chunk, trace):
    """coeffs (updated in place) -= lr * grad_coeffs, `steps` times; trace[s // record_every] = loss at step s."""
    n = x.shape[0]
    num_chunks = max(1, (n + chunk - 1) // chunk)
    partials = np.empty((num_chunks, coeffs.shape[0] + 1))
    sums = np.empty(coeffs.shape[0] + 1)
    until_record = 1  # a countdown: an integer division per step costs more than a small fit's whole step
    record = 0
    for _ in range(steps):
        if num_chunks == 1:  # the chunk's sums are the totals: no slicing, no combination (same result)
            _poly_mse_chunk(x, y, coeffs, sums)
        else:
            for c in range(num_chunks):
                _poly_mse_chunk(x[c * chunk : (c + 1) * chunk], y[c * chunk : (c + 1) * chunk], coeffs, partials[c])
            _combine_chunks(partials, sums)
        until_record -= 1
        if until_record == 0:
            trace[record] = sums[0] / n
            record += 1
            until_record = record_every
        for k in range(coeffs.shape[0]):
            coeffs[k] -= lr * (2.0 / n * sums[k + 1])


def _fit_batched(x, y, coeffs, lr, steps, record_every, chunk, trace):
    """Independent fits of y[b] (x[b], or x[0] shared), over the series (in parallel in the parallel variant)."""
    x_stride = min(x.shape[0] - 1, 1)  # 0: one x row shared by every series
    for b in prange(y.shape[0]):
        _fit_one(x[b * x_stride], y[b], coeffs[b], lr, steps, record_every, chunk, trace[b])


_fit_batched_serial, _fit_batched_parallel = _serial_and_parallel(_fit_batched)


# --- poly_moments: power_sums[p] = sum x^p, cross_sums[k] = sum y x^k, square_sum = sum y^2 --------------------------


@njit(**_SUM_JIT)
def _poly_moments_chunk(x, y, powers, cross):
    """One chunk's float64 sums, in L1 blocks: powers[p] = sum x^p (p < powers.shape[0]), cross[0] = sum y^2 and
    cross[1 + k] = sum y x^k (k < cross.shape[0] - 1); an empty powers or cross skips those sums (y is then not
    read). Powers are running products 1 x x ..., y x x ..., in memory (one multiply per element and power), so
    fast-math reassociates only the sums, never the products (which would change where they overflow)."""
    powers[:] = 0.0
    cross[:] = 0.0
    xs = np.empty(BLOCK)
    weights = np.empty(BLOCK)
    term = np.empty(BLOCK)
    for i in range(0, x.shape[0], BLOCK):
        _load_block(x, i, 0.0, xs)
        if cross.shape[0] > 0:
            _load_block(y, i, 0.0, weights)  # padding weighs 0
            total = 0.0
            for j in range(BLOCK):
                total += weights[j] * weights[j]
            cross[0] += total
            _accumulate_power_block(cross[1:], 0, xs, weights, term)
        if powers.shape[0] > 0:
            valid = min(BLOCK, x.shape[0] - i)
            for j in range(BLOCK):
                weights[j] = 1.0 if j < valid else 0.0
            _accumulate_power_block(powers, 0, xs, weights, term)


def _poly_moments_chunks(x, y, degree, chunk, power_sums, cross_sums, square_sum):
    """x (Bx, N) with Bx = B (each series its own x) or 1 (shared), y (B, N); power_sums (Bx, 2D+1), cross_sums
    (B, D+1), square_sum (B,). Tasks: (series, chunk) pairs, each summing both its x powers and y sums (own x), plus
    one powers-only task per chunk of a shared x; then each sum's chunks combined in order."""
    series, n = y.shape
    num_chunks = max(1, (n + chunk - 1) // chunk)
    fused = x.shape[0] == series  # (a (N,) x with a (1, N) y too)
    power_partials = np.empty((x.shape[0], num_chunks, 2 * degree + 1))
    cross_partials = np.empty((series, num_chunks, degree + 2))
    skip = np.empty(0)
    data_tasks = series * num_chunks
    for task in prange(data_tasks + (0 if fused else num_chunks)):
        b, c = task // num_chunks, task % num_chunks
        if task >= data_tasks:  # a shared x's powers
            xs = x[0, c * chunk : (c + 1) * chunk]
            _poly_moments_chunk(xs, xs, power_partials[0, c], skip)
        else:
            xs = x[b if fused else 0, c * chunk : (c + 1) * chunk]
            powers = power_partials[b, c] if fused else skip
            _poly_moments_chunk(xs, y[b, c * chunk : (c + 1) * chunk], powers, cross_partials[b, c])
    for b in prange(series):
        totals = np.empty(degree + 2)
        _combine_chunks(cross_partials[b], totals)
        square_sum[b] = totals[0]
        cross_sums[b, :] = totals[1:]
        if b < x.shape[0]:
            _combine_chunks(power_partials[b], power_sums[b])


_poly_moments_serial, _poly_moments_parallel = _serial_and_parallel(_poly_moments_chunks)


# --- fit_poly_moments: gradient descent on c.A c - 2 c.b + s, from the sums alone -------------------------------------


@njit(**_JIT)
def _descend_moments(hankel, target, offset, c, step_size, steps, record_every, trace):
    """Any degree: `steps` times u = A c (A[j, k] = hankel[j + k]), c -= step_size (u - target), with
    trace[s // record_every] = c.u - 2 c.target + offset at step s (before its update)."""
    terms = c.shape[0]
    u = np.empty(terms)
    until_record = 1  # a countdown: an integer division per step would cost as much as the step
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
            trace[record] = quadratic - 2.0 * linear + offset
            record += 1
            until_record = record_every
        for k in range(terms):
            c[k] -= step_size * (u[k] - target[k])


@njit(**_JIT)
def _descend_moments_degree4(hankel, target, offset, c, step_size, steps, record_every, trace):
    """_descend_moments for degree 4 (the write-ups' fit), every value a scalar: numba keeps them in registers,
    about five times faster than the loops over arrays. The same operations in the same order."""
    h0, h1, h2, h3, h4 = hankel[0], hankel[1], hankel[2], hankel[3], hankel[4]
    h5, h6, h7, h8 = hankel[5], hankel[6], hankel[7], hankel[8]
    b0, b1, b2, b3, b4 = target[0], target[1], target[2], target[3], target[4]
    c0, c1, c2, c3, c4 = c[0], c[1], c[2], c[3], c[4]
    until_record = 1
    record = 0
    for _ in range(steps):
        u0 = h0 * c0 + h1 * c1 + h2 * c2 + h3 * c3 + h4 * c4
        u1 = h1 * c0 + h2 * c1 + h3 * c2 + h4 * c3 + h5 * c4
        u2 = h2 * c0 + h3 * c1 + h4 * c2 + h5 * c3 + h6 * c4
        u3 = h3 * c0 + h4 * c1 + h5 * c2 + h6 * c3 + h7 * c4
        u4 = h4 * c0 + h5 * c1 + h6 * c2 + h7 * c3 + h8 * c4
        until_record -= 1
        if until_record == 0:
            quadratic = c0 * u0 + c1 * u1 + c2 * u2 + c3 * u3 + c4 * u4
            linear = c0 * b0 + c1 * b1 + c2 * b2 + c3 * b3 + c4 * b4
            trace[record] = quadratic - 2.0 * linear + offset
            record += 1
            until_record = record_every
        c0 -= step_size * (u0 - b0)
        c1 -= step_size * (u1 - b1)
        c2 -= step_size * (u2 - b2)
        c3 -= step_size * (u3 - b3)
        c4 -= step_size * (u4 - b4)
    c[0], c[1], c[2], c[3], c[4] = c0, c1, c2, c3, c4


@njit(**_JIT)
def _fit_moments_one(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every, trace):
    """coeffs (float64, updated in place): `steps` times u = A c, c -= 2 lr (u - b), A[j, k] = power_sums[j + k] / N,
    b = cross_sums / N, N = power_sums[0]; trace[s // record_every] = c.u - 2 c.b + s at step s (before its update),
    s = square_sum / N. No fast-math: the reference's operations, up to the order of the sums in A c."""
    count = power_sums[0]
    hankel = power_sums / count
    target = cross_sums / count
    if coeffs.shape[0] == 5:
        _descend_moments_degree4(hankel, target, square_sum / count, coeffs, 2.0 * lr, steps, record_every, trace)
    else:
        _descend_moments(hankel, target, square_sum / count, coeffs, 2.0 * lr, steps, record_every, trace)


def _fit_moments_batched(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every, trace):
    """Independent fits of series b (power_sums[b], or power_sums[0] shared), in parallel in the parallel variant."""
    power_stride = min(power_sums.shape[0] - 1, 1)  # 0: one row of power sums shared by every series
    for b in prange(cross_sums.shape[0]):
        _fit_moments_one(
            power_sums[b * power_stride], cross_sums[b], square_sum[b], coeffs[b], lr, steps, record_every, trace[b]
        )


_fit_moments_batched_serial, _fit_moments_batched_parallel = _serial_and_parallel(_fit_moments_batched)


@njit(**_JIT)
def _scale_into(grad, source, out):
    """out = grad * source (elementwise, in the input dtype)."""
    for i in range(source.shape[0]):
        out[i] = grad * source[i]


# --- NumPy entry points: serial below PARALLEL_THRESHOLD, parallel above ----------------------------------------------
# Inputs: contiguous 1-D arrays of one float dtype (coefficients of any float dtype); outputs are written into
# preallocated arrays of that dtype, so callers (the torch ops) can hand in views of torch tensors.


_PARALLEL_LOCK = threading.Lock()


def _variant(kernels: tuple, n: int):
    """The serial kernel below PARALLEL_THRESHOLD or in a forked child (see ``_config.forked``), else the parallel
    one, which runs under a lock: numba's workqueue layer aborts on concurrent parallel calls from several Python
    threads, and each call already uses every core."""
    serial, parallel = kernels
    if n < _config.PARALLEL_THRESHOLD or _config.forked:
        return serial

    def locked(*args):
        with _PARALLEL_LOCK:
            return parallel(*args)

    return locked


def poly_into(x, coeffs, out) -> None:
    """out = p(x) = sum_k coeffs[k] x^k (float64 math)."""
    _variant((_poly_serial, _poly_parallel), x.size)(x, coeffs, _config.REDUCE_CHUNK, out)


def poly_backward_into(grad_y, x, coeffs, grad_x, grad_coeffs) -> None:
    """grad_x = grad_y p'(x); grad_coeffs[k] = sum grad_y x^k."""
    _variant((_poly_backward_serial, _poly_backward_parallel), x.size)(
        grad_y, x, coeffs, _config.REDUCE_CHUNK, grad_x, grad_coeffs
    )


def poly_mse_into(x, y, coeffs, loss, grad) -> None:
    """loss[0] = mean((p(x) - y)^2); grad[k] = 2/N sum (p(x) - y) x^k, in one pass (float64 data: to twice the
    working precision)."""
    kernels = (_poly_mse_accurate_serial, _poly_mse_accurate_parallel) if x.dtype == np.float64 else None
    _variant(kernels or (_poly_mse_serial, _poly_mse_parallel), x.size)(x, y, coeffs, _config.REDUCE_CHUNK, loss, grad)


def dot_into(a, b, out) -> None:
    """out[0] = sum_i a_i b_i, accumulated in float64 (float32 products are exact there; float64 data by Dot2)."""
    kernels = (_dot_accurate_serial, _dot_accurate_parallel) if a.dtype == np.float64 else (_dot_serial, _dot_parallel)
    _variant(kernels, a.size)(a, b, _config.REDUCE_CHUNK, out)


def fit_poly_into(x, y, coeffs, lr: float, steps: int, record_every: int, trace) -> None:
    """In place: coeffs (D+1,) or (B, D+1) fitted to y (N,) or (B, N) (x (N,) or (B, N)), trace filled."""
    if y.ndim == 1:
        _fit_one(x, y, coeffs, lr, steps, record_every, _config.REDUCE_CHUNK, trace)
    else:
        # parallel over series once a fit's work (points x steps, summed over the batch) pays for the threads
        _variant((_fit_batched_serial, _fit_batched_parallel), y.size * max(steps, 1))(
            x.reshape(-1, y.shape[1]), y, coeffs, lr, steps, record_every, _config.REDUCE_CHUNK, trace
        )


def poly_moments_into(x, y, degree: int, power_sums, cross_sums, square_sum) -> None:
    """x (Bx, N) with Bx = B or 1 (shared), y (B, N), float32/float64; float64 outputs power_sums (Bx, 2D+1),
    cross_sums (B, D+1), square_sum (B,)."""
    _variant((_poly_moments_serial, _poly_moments_parallel), y.size)(
        x, y, degree, _config.REDUCE_CHUNK, power_sums, cross_sums, square_sum
    )


def fit_poly_moments_into(power_sums, cross_sums, square_sum, coeffs, lr: float, steps: int, record_every: int, trace):
    """In place on the float64 coeffs (B, D+1) from the float64 sums power_sums (1 or B, 2D+1), cross_sums
    (B, D+1), square_sum (B,); trace (B, T) float64."""
    series, terms = cross_sums.shape
    if series == 1:
        _fit_moments_one(power_sums[0], cross_sums[0], square_sum[0], coeffs[0], lr, steps, record_every, trace[0])
    else:
        # parallel over series once the work (steps x (D+1)^2, summed over the batch) pays for the threads
        _variant((_fit_moments_batched_serial, _fit_moments_batched_parallel), series * terms * terms * max(steps, 1))(
            power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every, trace
        )


def dot_backward_into(grad, a, b, grad_a, grad_b) -> None:
    """grad_a = grad * b; grad_b = grad * a."""
    _scale_into(grad, b, grad_a)
    _scale_into(grad, a, grad_b)


# --- NumPy in, NumPy out ---------------------------------------------------------------------------------------------


def _flat(a) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def poly(x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """y = p(x) = sum_k coeffs[k] x^k, elementwise, x of any shape (float64 math, result in x's dtype)."""
    flat = _flat(x)
    out = np.empty_like(flat)
    poly_into(flat, _flat(coeffs), out)
    return out.reshape(np.shape(x))


def poly_backward(grad_y: np.ndarray, x: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """grad_x = grad_y p'(x); grad_coeffs[k] = sum grad_y x^k."""
    flat_x = _flat(x)
    grad_x, grad_coeffs = np.empty_like(flat_x), np.empty(np.size(coeffs), flat_x.dtype)
    poly_backward_into(_flat(grad_y), flat_x, _flat(coeffs), grad_x, grad_coeffs)
    return grad_x.reshape(np.shape(x)), grad_coeffs


def poly_mse(x: np.ndarray, y: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """loss = mean((p(x) - y)^2) and grad_coeffs[k] = 2/N sum (p(x) - y) x^k, in one pass over the data."""
    flat_x = _flat(x)
    loss, grad = np.empty(1, flat_x.dtype), np.empty(np.size(coeffs), flat_x.dtype)
    poly_mse_into(flat_x, _flat(y), _flat(coeffs), loss, grad)
    return loss.reshape(()), grad


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_i a_i b_i accumulated in float64, returned (0-d) in a's dtype."""
    out = np.empty(1, np.asarray(a).dtype)
    dot_into(_flat(a), _flat(b), out)
    return out.reshape(())


def dot_backward(grad, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """grad_a = grad * b; grad_b = grad * a."""
    a, b = _flat(a), _flat(b)
    grad_a, grad_b = np.empty_like(b), np.empty_like(a)
    dot_backward_into(np.asarray(grad, a.dtype).reshape(())[()], a, b, grad_a, grad_b)
    return grad_a, grad_b


def fit_poly(
    x: np.ndarray, y: np.ndarray, coeffs: np.ndarray, lr: float, steps: int, record_every: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on mean((p(x) - y)^2) from the initial coeffs; returns (coeffs, loss trace). y (N,) or
    (B, N) for B fits, in parallel; x (N,) shared or like y."""
    y = np.ascontiguousarray(y)
    x = np.ascontiguousarray(x, dtype=y.dtype)
    fitted = np.array(np.broadcast_to(coeffs, (*y.shape[:-1], np.shape(coeffs)[-1])), dtype=y.dtype, order="C")
    trace = np.empty((*y.shape[:-1], -(-steps // record_every)), y.dtype)
    fit_poly_into(x, y, fitted, lr, steps, record_every, trace)
    return fitted, trace


def poly_moments(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(power_sums, cross_sums, square_sum): sum x^p (p = 0..2D), sum y x^k (k = 0..D) and sum y^2 in float64, over
    the last dimension; y (N,) or (B, N), x (N,) shared (one power_sums) or like y."""
    y = np.ascontiguousarray(y)
    x = np.ascontiguousarray(x, dtype=y.dtype)
    x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    power_sums = np.empty((x2.shape[0], 2 * degree + 1))
    cross_sums, square_sum = np.empty((y2.shape[0], degree + 1)), np.empty(y2.shape[0])
    poly_moments_into(x2, y2, degree, power_sums, cross_sums, square_sum)
    return (
        power_sums.reshape(*x.shape[:-1], -1),
        cross_sums.reshape(*y.shape[:-1], -1),
        square_sum.reshape(y.shape[:-1]),
    )


def fit_poly_moments(
    power_sums: np.ndarray,
    cross_sums: np.ndarray,
    square_sum,
    coeffs: np.ndarray,
    lr: float,
    steps: int,
    record_every: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient descent on c.A c - 2 c.b + s (A[j, k] = power_sums[j + k] / N, b = cross_sums / N, s = square_sum / N,
    N = power_sums[..., 0]) in float64 from the initial coeffs; returns (coeffs, loss trace) in coeffs' dtype.
    Batched when cross_sums is (B, D+1): power_sums (2D+1,) shared or (B, 2D+1), square_sum (B,)."""
    cross_sums = np.asarray(cross_sums, np.float64)
    dtype = np.asarray(coeffs).dtype
    batch = cross_sums.shape[:-1]
    terms = cross_sums.shape[-1]
    fitted = np.array(np.broadcast_to(coeffs, (*batch, terms)), dtype=np.float64, order="C").reshape(-1, terms)
    records = -(-steps // record_every)
    trace = np.empty((fitted.shape[0], records))
    fit_poly_moments_into(
        np.ascontiguousarray(power_sums, np.float64).reshape(-1, 2 * terms - 1),
        np.ascontiguousarray(cross_sums).reshape(-1, terms),
        np.ascontiguousarray(square_sum, np.float64).reshape(-1),
        fitted,
        lr,
        steps,
        record_every,
        trace,
    )
    with np.errstate(over="ignore"):  # (float64 beyond the float32 range is inf, as in torch's casts)
        return fitted.reshape(*batch, terms).astype(dtype), trace.reshape(*batch, records).astype(dtype)
