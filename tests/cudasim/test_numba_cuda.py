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
from pykernels.numba import cuda as kernels

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
