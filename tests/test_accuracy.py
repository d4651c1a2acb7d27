"""Accumulation accuracy at scale: on N = 10^7 float32 inputs, pykernels' reductions are at least as accurate as
torch's on the same inputs (relative error against a float64 reference)."""

from __future__ import annotations

import pytest
import torch
from conftest import KERNEL_BACKENDS

from pykernels import get_backend, reference

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
