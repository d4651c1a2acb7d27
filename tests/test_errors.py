"""Bad input: a clear error that names the argument and what was expected, raised before any kernel runs,
the same from every backend (the C++ checks and the Python ones share their wording)."""

from __future__ import annotations

import pytest
import torch
from conftest import KERNEL_BACKENDS

import pykernels

f32, f64 = torch.float32, torch.float64


def t(*shape, dtype=f32, device="cpu"):
    return torch.ones(shape, dtype=dtype, device=device)


# (name, function name, args, exception type, message pattern)
BAD_CALLS = [
    (
        "integer_x",
        "poly",
        lambda: (torch.ones(3, dtype=torch.int64), t(2)),
        TypeError,
        r"x must be a floating-point tensor \(float32 or float64.*got torch.int64",
    ),
    (
        "mixed_dtypes",
        "poly",
        lambda: (t(3), t(2, dtype=f64)),
        TypeError,
        r"coeffs must have the same dtype as x \(torch.float32\), got torch.float64",
    ),
    ("coeffs_2d", "poly", lambda: (t(3), t(2, 3)), ValueError, r"coeffs must be 1-D .*got shape \[2, 3\]"),
    ("coeffs_empty", "poly", lambda: (t(3), t(0)), ValueError, r"coeffs must be 1-D with at least one"),
    ("x_empty", "poly", lambda: (t(0), t(2)), ValueError, r"x must not be empty, got shape \[0\]"),
    # torch's own argument parser answers for the compiled ops (RuntimeError), the Python checks a TypeError
    (
        "not_a_tensor",
        "poly",
        lambda: ([1.0, 2.0], t(2)),
        (TypeError, RuntimeError),
        r"(argument 'x'|x must be a torch.Tensor).*(Tensor|list)",
    ),
    (
        "mse_shape_mismatch",
        "poly_mse",
        lambda: (t(4), t(5), t(2)),
        ValueError,
        r"y must have the same shape as x \[4\], got \[5\]",
    ),
    (
        "mse_integer_y",
        "poly_mse",
        lambda: (t(4), torch.ones(4, dtype=torch.int32), t(2)),
        TypeError,
        r"y must have the same dtype as x",
    ),
    ("mse_x_empty", "poly_mse", lambda: (t(0), t(0), t(2)), ValueError, r"x must not be empty"),
    ("dot_lengths", "dot", lambda: (t(3), t(4)), ValueError, r"a and b must have the same length, got 3 and 4"),
    ("dot_2d", "dot", lambda: (t(2, 2), t(4)), ValueError, r"a must be 1-D, got shape \[2, 2\]"),
    ("dot_b_2d", "dot", lambda: (t(4), t(4, 1)), ValueError, r"b must be 1-D, got shape \[4, 1\]"),
    ("dot_empty", "dot", lambda: (t(0), t(0)), ValueError, r"a must not be empty"),
    (
        "dot_integer",
        "dot",
        lambda: (torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64)),
        TypeError,
        r"a must be a floating-point tensor",
    ),
    ("dot_mixed", "dot", lambda: (t(3, dtype=f64), t(3)), TypeError, r"b must have the same dtype as a"),
    (
        "half_on_cpu",
        "dot",
        lambda: (t(3, dtype=torch.float16), t(3, dtype=torch.float16)),
        TypeError,
        r"a must be a floating-point tensor \(float32 or float64\), got",
    ),
]


def _call(backend, function, args):
    return getattr(pykernels, function)(*args, backend=backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize(
    ("name", "function", "make_args", "error", "pattern"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_is_named(backend, name, function, make_args, error, pattern):
    with pytest.raises(error, match=pattern):
        _call(backend, function, make_args())


@pytest.mark.parametrize(
    ("name", "function", "make_args", "error", "pattern"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS]
)
def test_python_checks_say_the_same(name, function, make_args, error, pattern):
    """The "torch" backend validates in Python (_checks.py): same types and messages as the C++ checks, except
    for float16 on CPU, which the plain-torch reference can compute."""
    if name == "half_on_cpu":
        pytest.skip("the reference accepts float16")
    with pytest.raises(error, match=pattern):
        _call("torch", function, make_args())


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backward_ops_check_their_gradient(backend):
    ops = pykernels.get_backend(backend)
    with pytest.raises(ValueError, match=r"grad_y must have the same shape as x \[3\], got \[4\]"):
        ops.poly_backward(t(4), t(3), t(2))
    with pytest.raises(ValueError, match=r"grad must hold a single value \(0-d\), got shape \[2\]"):
        ops.dot_backward(t(2), t(3), t(3))
    with pytest.raises(TypeError, match=r"grad must have the same dtype as a"):
        ops.dot_backward(t(1, dtype=f64), t(3), t(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_tensors_on_different_devices(backend):
    with pytest.raises(RuntimeError, match=r"coeffs must be on the same device as x"):
        _call(backend, "poly", (t(3, device="cuda"), t(2)))
    with pytest.raises(RuntimeError, match=r"b must be on the same device as a"):
        _call(backend, "dot", (t(3, device="cuda"), t(3)))


def test_device_mismatch_is_named_by_the_python_checks():
    """Without a GPU, the Python checks are exercised on the meta device (the C++ ones in the CUDA job)."""
    with pytest.raises(RuntimeError, match=r"coeffs must be on the same device as x \(meta\), got cpu"):
        _call("torch", "poly", (t(3, device="meta"), t(2)))


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of 'cpp', 'numba', 'torch'; got 'fortran'"):
        pykernels.poly(t(3), t(2), backend="fortran")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_no_kernel_runs_on_bad_input(backend):
    """Checks come first: a bad call leaves its (otherwise writable) inputs untouched and allocates nothing."""
    x, coeffs = t(3), t(2, 2)
    before = (x.clone(), coeffs.clone(), x._version, coeffs._version)
    with pytest.raises(ValueError):
        _call(backend, "poly", (x, coeffs))
    assert torch.equal(x, before[0]) and torch.equal(coeffs, before[1])
    assert (x._version, coeffs._version) == before[2:]
