"""The numba CUDA kernels, against the NumPy references. They need a GPU, or numba's CUDA simulator in a process
of their own (the simulator replaces numba.cuda process-wide): tests/test_numba.py runs this file with
NUMBA_ENABLE_CUDASIM=1. The block and grid sizes are patched small so that the grid-stride loops wrap around and
several blocks' partial sums are combined."""

from __future__ import annotations

import os
from unittest.mock import patch

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    try:
        from numba import cuda

        if not cuda.is_available():
            raise ImportError
    except ImportError:
        pytest.skip("needs a CUDA GPU or NUMBA_ENABLE_CUDASIM=1 (run by tests/test_numba.py)", allow_module_level=True)

from numba import cuda

from pykernels import reference
from pykernels.numba import _config
from pykernels.numba import gpu as kernels

TEST_THREADS = 8
TEST_BLOCKS = 3  # 24 threads for 50 elements: every thread strides at least twice
N = 50


@pytest.fixture(autouse=True)
def small_grid():
    with (
        patch.object(_config, "CUDA_THREADS_PER_BLOCK", TEST_THREADS),
        patch.object(_config, "CUDA_MAX_BLOCKS", TEST_BLOCKS),
    ):
        yield


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def data(request):
    rng = np.random.default_rng(3)
    dtype = request.param
    x = rng.uniform(-1.5, 1.5, N).astype(dtype)
    y = rng.uniform(-1, 1, N).astype(dtype)
    coeffs = rng.uniform(-1, 1, 5).astype(dtype)
    return x, y, coeffs


def _rtol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def test_poly(data):
    x, _, coeffs = data
    out = cuda.device_array_like(x)
    kernels.poly_into(cuda.to_device(x), cuda.to_device(coeffs), out)
    np.testing.assert_allclose(
        out.copy_to_host(),
        reference.poly_numpy(x.astype(float), coeffs.astype(float)),
        rtol=_rtol(x.dtype),
        atol=_rtol(x.dtype),
    )


def test_poly_mse(data):
    x, y, coeffs = data
    out = cuda.device_array(coeffs.size + 1)
    kernels.poly_mse_into(cuda.to_device(x), cuda.to_device(y), cuda.to_device(coeffs), out)
    loss, grad = reference.poly_mse_numpy(x.astype(float), y.astype(float), coeffs.astype(float))
    result = out.copy_to_host()
    np.testing.assert_allclose(result[0], loss, rtol=1e-12)
    np.testing.assert_allclose(result[1:], grad, rtol=1e-12, atol=1e-12)


def test_poly_backward(data):
    x, grad_y, coeffs = data
    grad_x, grad_coeffs = cuda.device_array_like(x), cuda.device_array(coeffs.size)
    kernels.poly_backward_into(cuda.to_device(grad_y), cuda.to_device(x), cuda.to_device(coeffs), grad_x, grad_coeffs)
    expected_x, expected_coeffs = reference.poly_backward_numpy(*(a.astype(float) for a in (grad_y, x, coeffs)))
    np.testing.assert_allclose(grad_x.copy_to_host(), expected_x, rtol=_rtol(x.dtype), atol=_rtol(x.dtype))
    np.testing.assert_allclose(grad_coeffs.copy_to_host(), expected_coeffs, rtol=1e-12, atol=1e-12)


def test_dot_and_backward(data):
    a, b, _ = data
    out = cuda.device_array(1)
    kernels.dot_into(cuda.to_device(a), cuda.to_device(b), out)
    np.testing.assert_allclose(out.copy_to_host()[0], np.dot(a.astype(float), b.astype(float)), rtol=1e-12)
    grad_a, grad_b = cuda.device_array_like(a), cuda.device_array_like(b)
    kernels.dot_backward_into(
        cuda.to_device(np.array([1.5], a.dtype)), cuda.to_device(a), cuda.to_device(b), grad_a, grad_b
    )
    np.testing.assert_allclose(grad_a.copy_to_host(), 1.5 * b, rtol=_rtol(a.dtype))
    np.testing.assert_allclose(grad_b.copy_to_host(), 1.5 * a, rtol=_rtol(a.dtype))


def test_single_block_and_tiny_inputs():
    with patch.object(_config, "CUDA_MAX_BLOCKS", 1):
        x = np.array([0.5])
        out = cuda.device_array(1)
        kernels.dot_into(cuda.to_device(x), cuda.to_device(x), out)
        assert out.copy_to_host()[0] == 0.25


def test_bad_launch_configuration_and_degree_are_named():
    x = cuda.to_device(np.ones(4))
    with patch.object(_config, "CUDA_THREADS_PER_BLOCK", 6), pytest.raises(ValueError, match="power of two"):
        kernels.poly_into(x, cuda.to_device(np.ones(2)), cuda.device_array(4))
    with pytest.raises(ValueError, match="degree <= 15"):
        kernels.poly_mse_into(x, x, cuda.to_device(np.ones(20)), cuda.device_array(21))


def _moments_on_device(x, y, degree):
    """poly_moments through the device-array API, shaped as the op returns them."""
    n = y.shape[-1]
    x2, y2 = x.reshape(-1, n), y.reshape(-1, n)
    totals = cuda.device_array((y2.shape[0], 3 * degree + 3))
    kernels.poly_moments_into(cuda.to_device(x2), cuda.to_device(y2), degree, totals)
    totals = totals.copy_to_host()
    powers = 2 * degree + 1
    return (
        totals[: x2.shape[0], :powers].reshape(*x.shape[:-1], powers),
        totals[:, powers + 1 :].reshape(*y.shape[:-1], degree + 1),
        totals[:, powers].reshape(y.shape[:-1]),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["single", "shared_x", "own_x"])
@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("max_blocks", [TEST_BLOCKS, 2 * TEST_BLOCKS], ids=["blocks1", "blocks2"])
def test_poly_moments(dtype, layout, degree, max_blocks):
    """Batched, the blocks are shared among the series (1 or 2 each here) and the grid's y dimension (patched to 2)
    strides over the 3 series."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    series = {"single": (), "shared_x": (3,), "own_x": (3,)}[layout]
    x = rng.uniform(-1.5, 1.5, (*series, N) if layout == "own_x" else (N,)).astype(dtype)
    y = rng.uniform(-1, 1, (*series, N)).astype(dtype)
    expected = reference.poly_moments_torch(torch.from_numpy(x), torch.from_numpy(y), degree)
    with patch.object(_config, "CUDA_MAX_BLOCKS", max_blocks), patch.object(kernels, "_MAX_GRID_Y", 2):
        moments = _moments_on_device(x, y, degree)
    for got, want in zip(moments, expected, strict=True):
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)


NON_FINITE = {  # x values by index, and y = 0 at index 0 (a y weight of 0 times an overflowing x^k stays 0)
    "nan": {3: np.nan, 10: np.inf},
    "infinities": {3: np.inf, 10: -np.inf},  # odd powers inf - inf = NaN, even ones inf; y x^k likewise
    "overflow": {0: 1e200, 5: 1e155},  # x^2 overflows at index 0, x^3 at index 5; y x^k from index 0 stays 0
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator computes in NumPy scalars, which warn
@pytest.mark.parametrize("case", list(NON_FINITE))
def test_poly_moments_non_finite(case):
    torch = pytest.importorskip("torch")
    x = np.linspace(-1, 1, N)
    for index, value in NON_FINITE[case].items():
        x[index] = value
    y = np.linspace(0, 1, N)
    got = _moments_on_device(x, y, 2)
    expected = reference.poly_moments_torch(torch.from_numpy(x), torch.from_numpy(y), 2)
    for g, w in zip(got, expected, strict=True):
        w = w.numpy()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w))
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w))
        np.testing.assert_allclose(g[np.isfinite(w)], w[np.isfinite(w)], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["single", "shared_sums", "own_sums"])
@pytest.mark.parametrize(("degree", "steps", "record_every"), [(0, 5, 1), (3, 20, 3), (2, 0, 1)])
def test_fit_poly_moments(dtype, layout, degree, steps, record_every):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    series = {"single": (), "shared_sums": (3,), "own_sums": (3,)}[layout]
    x = rng.uniform(-1, 1, (*series, N) if layout == "own_sums" else (N,))
    y = rng.uniform(-1, 1, (*series, N))
    sums = reference.poly_moments_torch(torch.from_numpy(x), torch.from_numpy(y), degree)
    init = rng.uniform(-1, 1, (*series, degree + 1) if layout == "own_sums" else (degree + 1,)).astype(dtype)
    expected = reference.fit_poly_moments_torch(*sums, torch.from_numpy(init), 0.3, steps, record_every)

    terms, batch = degree + 1, sums[1].shape[:-1]
    fitted = cuda.device_array((int(np.prod(batch)), terms), dtype)
    trace_t = cuda.device_array((max(1, -(-steps // record_every)), int(np.prod(batch))), dtype)
    power_sums, cross_sums, square_sum = (s.numpy() for s in sums)
    kernels.fit_poly_moments_into(
        cuda.to_device(power_sums.reshape(-1, 2 * terms - 1)),
        cuda.to_device(cross_sums.reshape(-1, terms)),
        cuda.to_device(square_sum.reshape(-1)),
        cuda.to_device(init.reshape(-1, terms)),
        0.3,
        steps,
        record_every,
        fitted,
        trace_t,
    )
    coeffs = fitted.copy_to_host().reshape(*batch, terms)
    trace = trace_t.copy_to_host()[: -(-steps // record_every)].T.reshape(*batch, -(-steps // record_every))
    tolerance = _rtol(dtype)
    np.testing.assert_allclose(coeffs, expected[0].numpy(), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(trace, expected[1].numpy(), rtol=tolerance, atol=tolerance)
    assert coeffs.dtype == trace.dtype == dtype


def test_moments_degree_is_checked():
    x = cuda.to_device(np.ones((1, 4)))
    with pytest.raises(ValueError, match="degree <= 15"):
        kernels.poly_moments_into(x, x, 16, cuda.device_array((1, 51)))
