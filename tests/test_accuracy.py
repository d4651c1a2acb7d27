"""Accuracy. Against exact rational arithmetic (pykernels.accuracy): dot and poly_mse are correctly rounded on random
data in float32 and float64, within Dot2's error bound and at least as accurate as torch on ill-conditioned data.
At scale: on N = 10^7 float32 inputs, at least as accurate as torch (relative error against float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import KERNEL_BACKENDS

from pykernels import accuracy, get_backend, reference

DTYPES = [torch.float32, torch.float64]
CORRECTLY_ROUNDED = 0.5 + 1e-6  # ulps: the final rounding, plus the twice-working-precision sums' own error
CONDITIONS = {torch.float32: [1e4, 1e8, 1e12], torch.float64: [1e8, 1e16, 1e24, 1e32]}
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
NEAR_FIT_ULPS = 1000  # measured: at most 21 (float64, 40 problems) and 2.6 (float32)


@pytest.fixture(scope="module", params=DTYPES, ids=str)
def dot_cases(request):
    """(random pairs, ill-conditioned pairs by condition number) of one dtype."""
    dtype, generator = request.param, np.random.default_rng(20261203)
    random = [accuracy.random_dot(1000, dtype, generator) for _ in range(6)]
    ill = {c: [accuracy.ill_conditioned_dot(100, c, dtype, generator) for _ in range(4)] for c in CONDITIONS[dtype]}
    return random, ill


@pytest.fixture(scope="module", params=DTYPES, ids=str)
def poly_mse_cases(request):
    """(random fits, near fits) of one dtype: degree 4, 200 points."""
    dtype, generator = request.param, np.random.default_rng(20261204)
    return (
        [accuracy.random_fit(200, 4, dtype, generator) for _ in range(6)],
        [accuracy.near_fit(200, 4, dtype, generator) for _ in range(6)],
    )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_dot_is_correctly_rounded_on_random_data(dot_cases, backend):
    random, _ = dot_cases
    errors = accuracy.dot_errors(get_backend(backend).dot, random)
    assert max(errors) <= CORRECTLY_ROUNDED, errors


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_dot_is_at_least_as_accurate_as_torch_when_ill_conditioned(dot_cases, backend):
    """Up to condition numbers where torch's error is hundreds of millions of ulps; beyond 1/u (float64: 1e16),
    torch's result has no correct digit (the table in the README shows condition 1e32 too)."""
    _, ill = dot_cases
    for condition, pairs in ill.items():
        if condition > 1e24:
            continue
        ours = accuracy.dot_errors(get_backend(backend).dot, pairs)
        theirs = accuracy.dot_errors(torch.dot, pairs)
        for mine, torchs in zip(ours, theirs, strict=True):
            assert mine <= max(torchs, CORRECTLY_ROUNDED), (condition, ours, theirs)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_dot_meets_its_error_bound(dot_cases, backend):
    """|dot - exact| <= u_T |exact| + (n u)^2 sum|a_i b_i| for float64 data (Dot2: Ogita, Rump and Oishi, Prop. 5.5,
    gamma_n ~ n u), and <= u_T |exact| + n u_64 sum|a_i b_i| for float32 data (float64 sums of exact products):
    at every condition number, 1e32 included."""
    random, ill = dot_cases
    for a, b in random + [pair for pairs in ill.values() for pair in pairs]:
        exact, magnitude = accuracy.exact_dot(a, b), accuracy.exact_dot(a.abs(), b.abs())
        n, u64 = a.numel(), UNIT_ROUNDOFF[torch.float64]
        sums = (n * u64) ** 2 if a.dtype == torch.float64 else n * u64
        bound = UNIT_ROUNDOFF[a.dtype] * abs(float(exact)) + sums * float(magnitude)
        assert abs(float(get_backend(backend).dot(a, b)) - float(exact)) <= bound


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_poly_mse_is_correctly_rounded_on_random_data(poly_mse_cases, backend):
    random, _ = poly_mse_cases
    errors = accuracy.poly_mse_errors(get_backend(backend).poly_mse, random)
    assert max(errors) <= CORRECTLY_ROUNDED, errors


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_poly_mse_is_at_least_as_accurate_as_torch_on_a_near_fit(poly_mse_cases, backend):
    """y = p(x) rounded: the loss and gradient are sums of rounding errors. Against the write-up's power-matrix
    formula, loss and every gradient component."""
    _, near = poly_mse_cases
    ours = accuracy.poly_mse_errors(get_backend(backend).poly_mse, near)
    theirs = accuracy.poly_mse_errors(reference.writeup_poly_mse_torch, near)
    for mine, torchs in zip(ours, theirs, strict=True):
        assert mine <= max(torchs, CORRECTLY_ROUNDED), (ours, theirs)
    # and to about u relative to the residuals: plain float64 Horner with float64 sums is off by ~1e16 ulps here
    assert max(ours) <= NEAR_FIT_ULPS, ours


def test_the_exact_arithmetic_is_exact():
    """The yardstick itself: a cancellation float64 sums get wrong, and the generator's condition number."""
    a = torch.tensor([1e16, 1.0, -1e16], dtype=torch.float64)
    assert accuracy.exact_dot(a, torch.ones(3, dtype=torch.float64)) == 1
    assert accuracy.ulp_error(0.0, accuracy.exact_dot(a, torch.ones(3, dtype=torch.float64)), torch.float64) > 1e15
    assert accuracy.ulp_error(math.inf, accuracy.exact_dot(a, a), torch.float64) == math.inf
    a, b = accuracy.ill_conditioned_dot(100, 1e20, torch.float64, np.random.default_rng(0))
    assert 1e17 < accuracy.condition_number(a, b) < 1e23


N = 10_000_000


def relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return ((value.double() - exact).abs().max() / exact.abs().max()).item()


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1234)
    # positive-mean data: the running sum grows, so a naive float32 accumulation visibly loses digits
    a = torch.rand(N, generator=generator)
    b = torch.rand(N, generator=generator)
    x = torch.rand(N, generator=generator) * 2
    y = torch.sin(x) + 0.1 * torch.rand(N, generator=generator)
    coeffs = torch.tensor([0.3, -0.2, 0.1, 0.05, -0.01])
    return a, b, x, y, coeffs


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_dot_is_at_least_as_accurate_as_torch(data, backend):
    a, b, *_ = data
    exact = torch.dot(a.double(), b.double())
    ours = relative_error(get_backend(backend).dot(a, b), exact)
    theirs = relative_error(torch.dot(a, b), exact)
    assert ours <= theirs, (ours, theirs)
    assert ours <= 2**-24  # float64 accumulation: only the final rounding to float32 remains


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_poly_mse_is_at_least_as_accurate_as_torch(data, backend):
    *_, x, y, coeffs = data
    exact_loss, exact_grad = reference.poly_mse_torch(x.double(), y.double(), coeffs.double())
    loss, grad = get_backend(backend).poly_mse(x, y, coeffs)
    torch_loss, torch_grad = reference.writeup_poly_mse_torch(x, y, coeffs)  # what a torch user writes
    assert relative_error(loss, exact_loss) <= relative_error(torch_loss, exact_loss)
    assert relative_error(grad, exact_grad) <= relative_error(torch_grad, exact_grad)
    assert relative_error(loss, exact_loss) <= 2**-23
    assert relative_error(grad, exact_grad) <= 2**-23
