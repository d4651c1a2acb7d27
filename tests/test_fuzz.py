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
    x, y, coeffs = _inputs(seed, n, degree, dtype, contiguous, scale)
    ops = pykernels.get_backend(backend)
    x64, y64, c64 = x.double(), y.double(), coeffs.double()
    magnitude = reference.poly_torch(x64.abs(), c64.abs())  # sum |c_k| |x|^k, per element

    _close(ops.poly(x, coeffs), reference.poly_torch(x64, c64), magnitude, dtype)

    loss, grad = ops.poly_mse(x, y, coeffs)
    exact_loss, exact_grad = reference.poly_mse_torch(x64, y64, c64)
    residual_bound = magnitude + y64.abs()
    _close(loss, exact_loss, (residual_bound**2).mean(), dtype)
    powers = reference.power_matrix_torch(x64.abs(), degree)
    _close(grad, exact_grad, 2 * (residual_bound[:, None] * powers).mean(dim=0), dtype)

    grad_x, grad_coeffs = ops.poly_backward(y, x, coeffs)
    exact_grad_x, exact_grad_coeffs = reference.poly_backward_torch(y64, x64, c64)
    k = torch.arange(1, degree + 1, dtype=torch.float64)
    derivative_bound = powers[:, :degree] @ (k * c64.abs()[1:])  # sum k |c_k| |x|^(k-1)
    _close(grad_x, exact_grad_x, y64.abs() * derivative_bound, dtype)
    _close(grad_coeffs, exact_grad_coeffs, (y64.abs()[:, None] * powers).sum(dim=0), dtype)

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
