"""Differential fuzzing: hypothesis draws shapes, degrees, dtypes, layouts and magnitudes; every kernel backend must
agree with the float64 reference within the rounding its float64 accumulation allows."""

from __future__ import annotations

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


def _close(got, exact, bound, dtype):
    """|got - exact| <= 4 eps(dtype) |exact| + 64 eps(float64) bound + one subnormal step: the output's rounding
    (subnormal outputs round to a fixed absolute step), plus float64 sums of terms bounded by `bound`."""
    got, exact = got.double(), exact.double()
    subnormal_step = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    tolerance = 4 * EPS[dtype] * exact.abs() + 64 * EPS[torch.float64] * bound + subnormal_step
    assert bool(((got - exact).abs() <= tolerance).all()), (got, exact, tolerance)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    degree=st.integers(0, 10),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    contiguous=st.booleans(),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
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
