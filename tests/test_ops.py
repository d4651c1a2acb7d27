"""Every op of every kernel backend against the write-up's formulas (pykernels.reference) in float64."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    CASES,
    DEVICES,
    DOT_LENGTHS,
    DTYPES,
    KERNEL_BACKENDS,
    assert_close,
    make_dot_inputs,
    make_poly_inputs,
    wide,
)

import pykernels
from pykernels import reference

pytestmark = [
    pytest.mark.parametrize("backend", KERNEL_BACKENDS),
    pytest.mark.parametrize("dtype", DTYPES, ids=str),
    pytest.mark.parametrize("device", DEVICES),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_poly(backend, dtype, device, case):
    x, _, coeffs = make_poly_inputs(case, dtype, device)
    out = pykernels.get_backend(backend).poly(x, coeffs)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert_close(out, reference.poly_torch(*wide(x, coeffs)), dtype)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_poly_backward(backend, dtype, device, case):
    x, grad_y, coeffs = make_poly_inputs(case, dtype, device)
    grad_x, grad_coeffs = pykernels.get_backend(backend).poly_backward(grad_y, x, coeffs)
    expected_x, expected_coeffs = reference.poly_backward_torch(*wide(grad_y, x, coeffs))
    assert grad_x.shape == x.shape and grad_coeffs.shape == coeffs.shape
    assert_close(grad_x, expected_x, dtype)
    # a sum of N terms of size up to max|x^k|: judged against the size of its terms
    assert_close(grad_coeffs, expected_coeffs, dtype, scale=expected_coeffs.abs().max().item() + x.numel())


@pytest.mark.parametrize("case", CASES, ids=str)
def test_poly_mse(backend, dtype, device, case):
    x, y, coeffs = make_poly_inputs(case, dtype, device)
    loss, grad_coeffs = pykernels.get_backend(backend).poly_mse(x, y, coeffs)
    expected_loss, expected_grad = reference.poly_mse_torch(*wide(x, y, coeffs))
    assert loss.shape == () and grad_coeffs.shape == coeffs.shape and loss.dtype == dtype
    assert_close(loss, expected_loss, dtype)
    assert_close(grad_coeffs, expected_grad, dtype)


@pytest.mark.parametrize("n", DOT_LENGTHS)
def test_dot(backend, dtype, device, n):
    a, b = make_dot_inputs(n, dtype, device)
    out = pykernels.get_backend(backend).dot(a, b)
    assert out.shape == () and out.dtype == dtype
    a64, b64 = wide(a, b)
    assert_close(out, reference.dot_torch(a64, b64), dtype, scale=(a64.abs() @ b64.abs()).item())


@pytest.mark.parametrize("n", DOT_LENGTHS)
def test_dot_backward(backend, dtype, device, n):
    a, b = make_dot_inputs(n, dtype, device)
    grad = torch.tensor(0.75, dtype=dtype, device=device)
    grad_a, grad_b = pykernels.get_backend(backend).dot_backward(grad, a, b)
    expected_a, expected_b = reference.dot_backward_torch(*wide(grad, a, b))
    assert_close(grad_a, expected_a, dtype)
    assert_close(grad_b, expected_b, dtype)


def test_public_functions_match_backend_ops(backend, dtype, device):
    x, y, coeffs = make_poly_inputs(CASES[2], dtype, device)
    ops = pykernels.get_backend(backend)
    torch.testing.assert_close(pykernels.poly(x, coeffs, backend=backend), ops.poly(x, coeffs), rtol=0, atol=0)
    result = pykernels.poly_mse(x, y, coeffs, backend=backend)
    assert isinstance(result, pykernels.PolyMSEResult)
    for got, want in zip(result, ops.poly_mse(x, y, coeffs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    a, b = x.reshape(-1), y.reshape(-1)
    torch.testing.assert_close(pykernels.dot(a, b, backend=backend), ops.dot(a, b), rtol=0, atol=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_propagate_like_torch(backend, dtype, device, value):
    """A non-finite input gives non-finite results exactly where the reference's are; NaN stays NaN. (At
    x = inf Horner returns the limit sign(c_D) inf where the power matrix's inf - inf gives NaN.)"""
    x, y, coeffs = make_poly_inputs(CASES[2], dtype, device)
    x = x.clone()
    x[3] = value
    ops = pykernels.get_backend(backend)

    def assert_same_finiteness(got, want):
        assert torch.equal(torch.isfinite(got), torch.isfinite(want))
        if value != value:  # NaN in, NaN out
            assert torch.equal(torch.isnan(got), torch.isnan(want))

    y_out, y_ref = ops.poly(x, coeffs), reference.poly_torch(x, coeffs)
    assert_same_finiteness(y_out, y_ref)
    finite = torch.isfinite(y_ref)
    assert_close(y_out[finite], reference.poly_torch(*wide(x, coeffs))[finite], dtype)
    for got, want in zip(ops.poly_mse(x, y, coeffs), reference.poly_mse_torch(x, y, coeffs), strict=True):
        assert_same_finiteness(got, want)
    a, b = x.reshape(-1), y.reshape(-1)
    assert_same_finiteness(ops.dot(a, b), reference.dot_torch(a, b))


def test_results_do_not_depend_on_thread_count(backend, dtype, device):
    if device != "cpu":
        pytest.skip("thread count applies to the CPU kernels")
    x, y, coeffs = make_poly_inputs(CASES[-1], dtype, device)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = pykernels.get_backend(backend).poly_mse(x, y, coeffs)
        torch.set_num_threads(max(2, threads))
        parallel = pykernels.get_backend(backend).poly_mse(x, y, coeffs)
    finally:
        torch.set_num_threads(threads)
    for s, p in zip(serial, parallel, strict=True):
        assert torch.equal(s, p)


def test_poly_mse_grad_output_is_differentiable(backend, dtype, device):
    """grad_coeffs is the loss's true gradient, so it carries the Hessian as its derivative (test_parity checks
    its values), as the reference's does."""
    x, y, coeffs = make_poly_inputs(CASES[2], dtype, device)
    result = pykernels.poly_mse(x, y, coeffs.requires_grad_(), backend=backend)
    assert result.loss.requires_grad and result.grad_coeffs.requires_grad
