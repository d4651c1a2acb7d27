"""Differential fuzzing: hypothesis draws shapes, degrees, dtypes, layouts and magnitudes (subnormal to overflowing),
and special values (inf, NaN, signed zeros, subnormals, huge) anywhere in the inputs; every kernel backend must agree
with the reference: finite results within the rounding its float64 accumulation allows, and inf/NaN exactly where
the reference has them. Examples are derandomized, so CI runs the same ones every time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import KERNEL_BACKENDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pykernels
from pykernels import reference

EPS = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}


def _inputs(seed, n, degree, dtype, contiguous, scale):
    rng = np.random.default_rng(seed)
    wide = rng.uniform(-1, 1, 2 * n) * scale
    x = torch.from_numpy(wide).to(dtype)
    x = x[::2] if not contiguous else x[:n]
    y = torch.from_numpy(rng.uniform(-1, 1, n) * scale ** min(degree, 3)).to(dtype)
    coeffs = torch.from_numpy(rng.uniform(-1, 1, degree + 1)).to(dtype)
    return x, y, coeffs


def _same_special_values(got, expected):
    """NaN, +inf and -inf in exactly the same places."""
    got, expected = got.double(), expected.double()
    for mask in (torch.isnan, torch.isposinf, torch.isneginf):
        assert torch.equal(mask(got), mask(expected)), (mask.__name__, got, expected)


def _close(got, exact, bound, dtype):
    """Where the exact result overflows the output dtype, the output is that infinity; elsewhere
    |got - exact| <= 4 eps(dtype) |exact| + 64 eps(float64) bound + one subnormal step: the output's rounding
    (subnormal outputs round to a fixed absolute step), plus float64 sums of terms bounded by `bound`."""
    _same_special_values(got, exact.to(dtype))
    finite = torch.isfinite(got)
    got, exact, bound = got.double()[finite], exact.double()[finite], torch.as_tensor(bound).double().expand_as(finite)
    subnormal_step = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    tolerance = 4 * EPS[dtype] * exact.abs() + 64 * EPS[torch.float64] * bound[finite] + subnormal_step
    tolerance = torch.nan_to_num(tolerance, nan=math.inf)  # a bound of 0 * inf: none (the pattern is checked above)
    assert bool(((got - exact).abs() <= tolerance).all()), (got, exact, tolerance)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    degree=st.integers(0, 10),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    contiguous=st.booleans(),
    scale=st.sampled_from([1e-160, 1e-3, 1.0, 30.0, 1e18]),  # subnormal products .. overflowing float32 outputs
)
def test_backends_agree_with_the_reference(backend, seed, n, degree, dtype, contiguous, scale):
    _assert_agrees_with_the_reference(
        pykernels.get_backend(backend), *_inputs(seed, n, degree, dtype, contiguous, scale)
    )


def _assert_agrees_with_the_reference(ops, x, y, coeffs, sums=True):
    """Every output of every op (those that sum over the points only if `sums`) against the reference in float64:
    inf/NaN where it has them, finite values within the rounding bound (_close)."""
    dtype, degree = x.dtype, coeffs.numel() - 1
    x64, y64, c64 = x.double(), y.double(), coeffs.double()
    magnitude = reference.poly_torch(x64.abs(), c64.abs())  # sum |c_k| |x|^k, per element
    _close(ops.poly(x, coeffs), reference.poly_torch(x64, c64), magnitude, dtype)
    powers = reference.power_matrix_torch(x64.abs(), degree)
    grad_x, grad_coeffs = ops.poly_backward(y, x, coeffs)
    exact_grad_x, exact_grad_coeffs = reference.poly_backward_torch(y64, x64, c64)
    k = torch.arange(1, degree + 1, dtype=torch.float64)
    derivative_bound = powers[:, :degree] @ (k * c64.abs()[1:])  # sum k |c_k| |x|^(k-1)
    _close(grad_x, exact_grad_x, y64.abs() * derivative_bound, dtype)
    if not sums:
        return
    _close(grad_coeffs, exact_grad_coeffs, (y64.abs()[:, None] * powers).sum(dim=0), dtype)

    loss, grad = ops.poly_mse(x, y, coeffs)
    exact_loss, exact_grad = reference.poly_mse_torch(x64, y64, c64)
    residual_bound = magnitude + y64.abs()
    _close(loss, exact_loss, (residual_bound**2).mean(), dtype)
    _close(grad, exact_grad, 2 * (residual_bound[:, None] * powers).mean(dim=0), dtype)

    _close(ops.dot(x, y), torch.dot(x64, y64), (x64.abs() * y64.abs()).sum(), dtype)


# --- special values ------------------------------------------------------------------------------------------------

SPECIAL_VALUES = [math.inf, -math.inf, math.nan, 0.0, -0.0, 1e-310, 1e30, -1e30]


def _values(draw, n, dtype):
    """n values: uniform ones with special values (drawn by hypothesis) at hypothesis-chosen places."""
    values = draw(st.lists(st.floats(-1.5, 1.5), min_size=n, max_size=n))
    for i in draw(st.lists(st.integers(0, n - 1), max_size=min(n, 4))):
        values[i] = draw(st.sampled_from(SPECIAL_VALUES))
    return torch.tensor(values, dtype=torch.float64).to(dtype)


@st.composite
def _special_inputs(draw):
    n, degree = draw(st.integers(1, 40)), draw(st.integers(0, 9))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return dtype, _values(draw, n, dtype), _values(draw, n, dtype), _values(draw, degree + 1, dtype)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@settings(max_examples=150, deadline=None, derandomize=True)
@given(inputs=_special_inputs())
def test_special_values_come_out_where_the_reference_has_them(backend, inputs):
    """Every output of every op, for inf/NaN/signed zeros/subnormals/huge values anywhere in x, y, coeffs, a, b:
    the reference's inf/NaN pattern (the reference evaluated in float64 on the same values, as the kernels
    compute, then rounded to the dtype). fit_poly is compared with the reference loop in the data's dtype, as it
    computes, on values that are special or moderate (its float32 sums near overflow may round differently)."""
    dtype, x, y, coeffs = inputs
    ops = pykernels.get_backend(backend)
    x64, y64, c64 = x.double(), y.double(), coeffs.double()
    pairs = [
        ((ops.poly(x, coeffs),), (reference.poly_torch(x64, c64),)),
        (ops.poly_mse(x, y, coeffs), reference.poly_mse_torch(x64, y64, c64)),
        (ops.poly_backward(y, x, coeffs), reference.poly_backward_torch(y64, x64, c64)),
        ((ops.dot(x, y),), (reference.dot_torch(x64, y64),)),
        (ops.dot_backward(y[:1].reshape(()), x, y), reference.dot_backward_torch(y64[:1].reshape(()), x64, y64)),
    ]
    for got, expected in pairs:
        for g, e in zip(got, expected, strict=True):
            _same_special_values(g, e.to(dtype))
    if not bool((x.abs() == 1e30).any() | (y.abs() == 1e30).any() | (coeffs.abs() == 1e30).any()):
        fitted = ops.fit_poly(x, y, coeffs, 0.05, 3, 1)
        for g, e in zip(fitted, reference.fit_poly_torch(x, y, coeffs, 0.05, 3), strict=True):
            _same_special_values(g, e)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_float32_results_are_float64_results_rounded_once(backend):
    """Where a float32 formula would overflow in an intermediate, the kernels (and the reference, backend "torch",
    which computes as they do) return the float64 result rounded: finite, or -inf where float32 makes inf - inf."""
    f32 = torch.float32
    cases = {
        "poly": lambda ops: ops.poly(torch.tensor([2.0]), torch.tensor([-3e38, -3e38, -3e38, 3e38])),
        "dot": lambda ops: ops.dot(torch.tensor([3e38, 3e38, -3e38]), torch.ones(3)),
        "poly_mse": lambda ops: ops.poly_mse(
            torch.cat([torch.tensor([1e20]), torch.ones(999)]), torch.zeros(1000), torch.tensor([0.0, 1.0])
        )[0],
        "poly_backward": lambda ops: ops.poly_backward(
            torch.tensor([1.0, -1.0]), torch.tensor([1e30, math.inf]), torch.tensor([0.0, 0.0, 1.0])
        )[1],
    }
    for name, call in cases.items():
        got, expected = call(pykernels.get_backend(backend)), call(pykernels.get_backend("torch"))
        assert got.dtype == expected.dtype == f32
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0, equal_nan=True, msg=name)
    assert (
        pykernels.get_backend(backend).poly_backward(
            torch.tensor([1.0, -1.0]), torch.tensor([1e30, math.inf]), torch.tensor([0.0, 0.0, 1.0])
        )[1][2]
        == -math.inf
    )


# --- the limits of the float range ---------------------------------------------------------------------------------


@st.composite
def _limit_inputs(draw):
    """Coefficients and y up to the dtype's largest finite value, x of moderate size: Horner's intermediates
    overflow or stay finite depending on each product's rounding."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    largest = torch.finfo(dtype).max
    n, degree = draw(st.integers(1, 8)), draw(st.integers(1, 5))
    huge = st.floats(-1.0, 1.0).map(lambda f: f * largest)
    # (not tiny: where x^k underflows, the float64 kernels' twice-working-precision powers keep digits torch loses)
    moderate = st.sampled_from([-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0]) | st.floats(0.25, 4.0).flatmap(
        lambda f: st.sampled_from([f, -f])
    )
    large = st.floats(1e3, 1e12).flatmap(lambda f: st.sampled_from([f, -f]))  # Horner's error terms grow by x
    x = draw(st.lists(moderate | large, min_size=n, max_size=n))
    y = draw(st.lists(huge, min_size=n, max_size=n))
    coeffs = draw(st.lists(huge | moderate, min_size=degree + 1, max_size=degree + 1))
    return tuple(torch.tensor(values, dtype=torch.float64).to(dtype) for values in (x, y, coeffs))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(inputs=_limit_inputs())
def test_backends_agree_at_the_limits(backend, inputs):
    """One rounding semantics (csrc/common/poly_math.h): every product rounded on its own, as torch rounds it, so
    a Horner step that overflows does so on every backend (x = 2, coeffs (-1.7e308, 1.7e308): p = inf on all).
    Elementwise outputs over several points; the sums over one point (a sum's order could decide whether a partial
    sum overflows)."""
    x, y, coeffs = inputs
    ops = pykernels.get_backend(backend)
    _assert_agrees_with_the_reference(ops, x, y, coeffs, sums=False)
    _assert_agrees_with_the_reference(ops, x[:1], y[:1], coeffs)


def test_the_limit_cases_of_the_issue():
    """The two cases that disagreed when the C++ and numba kernels fused Horner's products into FMAs."""
    x, c = torch.tensor([2.0], dtype=torch.float64), torch.tensor([-1.7e308, 1.7e308], dtype=torch.float64)
    y, zero = torch.tensor([1.7e308], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    for backend in [*KERNEL_BACKENDS, "torch"]:
        ops = pykernels.get_backend(backend)
        assert ops.poly(x, c).item() == math.inf, backend
        assert ops.poly_mse(x, y, zero)[0].item() == math.inf, backend


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batched"])
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_a_fit_whose_products_overflow_overflows_on_every_backend(backend, batched):
    """p(2) = 2 * 1.7e308 - 1.7e308 is inf when the product is rounded, as the reference rounds it; a fused product
    made the kernels' fit see p = y, loss 0, and keep its coefficients (their SIMD loops are now certified per
    segment and the rest redone in the reference's order)."""
    x, y = torch.full((3,), 2.0, dtype=torch.float64), torch.full((3,), 1.7e308, dtype=torch.float64)
    if batched:
        x, y = x.expand(3, 3), y.expand(3, 3)
    init = torch.tensor([-1.7e308, 1.7e308], dtype=torch.float64)
    got = pykernels.fit_poly(x, y, 1, lr=1e-3, steps=3, init=init, method="data", backend=backend)
    expected = pykernels.fit_poly(x, y, 1, lr=1e-3, steps=3, init=init, method="data", backend="torch")
    assert bool(torch.isinf(expected.trace[..., 0]).all())
    for g, e in zip(got, expected, strict=True):
        _same_special_values(g, e)


def test_an_overflowing_compensation_falls_back_to_the_plain_residual():
    """Compensated Horner's error term grows by x at every step and can overflow on its own where Horner cancels to
    a finite value: the float64 poly_mse then uses the plain residual, as every backend forms it (a hostile
    review's case: the gradient was inf on cpp and numba, finite on torch)."""
    x = torch.tensor([5053054299.843582, 0.0], dtype=torch.float64)
    c = torch.tensor(
        [-1.6179238213760842e308, 0.0, -8.981621351436471e305, 1.7774638502725962e296], dtype=torch.float64
    )
    y = torch.tensor([0.0, -1.6179238213760842e308], dtype=torch.float64)
    expected = pykernels.get_backend("torch").poly_mse(x, y, c)
    assert bool(torch.isfinite(expected[1][0]))
    for backend in KERNEL_BACKENDS:
        for got, want in zip(pykernels.get_backend(backend).poly_mse(x, y, c), expected, strict=True):
            _same_special_values(got, want)
