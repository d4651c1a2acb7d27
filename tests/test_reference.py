"""The references themselves: the torch and NumPy formulas agree with each other, with plain Python sums, and
their hand-written gradients with torch autograd of the forward formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pykernels import reference


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, 11)
    y = np.sin(x)
    coeffs = rng.uniform(-1, 1, 4)
    return x, y, coeffs


def test_poly_matches_a_plain_sum(data):
    x, _, coeffs = data
    expected = [sum(c * xi**k for k, c in enumerate(coeffs)) for xi in x]
    np.testing.assert_allclose(reference.poly_numpy(x, coeffs), expected, rtol=1e-13)
    np.testing.assert_allclose(
        reference.poly_torch(torch.from_numpy(x), torch.from_numpy(coeffs)).numpy(), expected, rtol=1e-13
    )


def test_poly_mse_matches_the_write_up(data):
    """The write-up: grad = -2/N X^T (y - X w), mse = mean((y - X w)^2), with X = x ** range(D+1)."""
    x, y, coeffs = data
    X = x.reshape(-1, 1) ** range(coeffs.size)
    y_model = X @ coeffs.reshape(-1, 1)
    grad = -2 / x.size * X.T @ (y.reshape(-1, 1) - y_model)
    mse = ((y.reshape(-1, 1) - y_model) ** 2).mean()
    for loss, g in (
        reference.poly_mse_numpy(x, y, coeffs),
        reference.poly_mse_torch(*map(torch.from_numpy, (x, y, coeffs))),
    ):
        assert float(loss) == pytest.approx(mse, rel=1e-13)
        np.testing.assert_allclose(np.asarray(g), grad.ravel(), rtol=1e-12)


@pytest.mark.parametrize("degree", [0, 1, 4])
def test_backward_formulas_match_autograd(degree):
    generator = torch.Generator().manual_seed(degree)
    x = torch.rand(3, 5, dtype=torch.float64, generator=generator).requires_grad_()
    coeffs = torch.rand(degree + 1, dtype=torch.float64, generator=generator).requires_grad_()
    grad_y = torch.rand(3, 5, dtype=torch.float64, generator=generator)
    # (a degree-0 polynomial does not read x: its x-gradient is a zero autograd leaves unmaterialized)
    expected = torch.autograd.grad(
        reference.poly_torch(x, coeffs), (x, coeffs), grad_y, allow_unused=True, materialize_grads=True
    )
    got = reference.poly_backward_torch(grad_y, x.detach(), coeffs.detach())
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    got_np = reference.poly_backward_numpy(grad_y.numpy(), x.detach().numpy(), coeffs.detach().numpy())
    for g, e in zip(got_np, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), rtol=1e-12)

    y = torch.rand(3, 5, dtype=torch.float64, generator=generator)
    _loss, grad_coeffs = reference.poly_mse_torch(x.detach(), y, coeffs.detach())
    c = coeffs.detach().requires_grad_()
    (autograd_grad,) = torch.autograd.grad(((reference.poly_torch(x.detach(), c) - y) ** 2).mean(), c)
    torch.testing.assert_close(grad_coeffs, autograd_grad)


def test_dot_and_its_backward(data):
    x, y, _ = data
    assert reference.dot_numpy(x, y) == pytest.approx(math.fsum(x * y), rel=1e-13)
    a, b = torch.from_numpy(x), torch.from_numpy(y)
    grad_a, grad_b = reference.dot_backward_torch(torch.tensor(2.0, dtype=torch.float64), a, b)
    torch.testing.assert_close(grad_a, 2 * b)
    torch.testing.assert_close(grad_b, 2 * a)
