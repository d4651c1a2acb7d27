"""Bad input: a clear error that names the argument and what was expected, raised before any kernel runs,
the same from every backend (the C++ checks and the Python ones share their wording)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import KERNEL_BACKENDS, ROUTES, routed

import pykernels
import pykernels.distributed

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


# Python arguments of every public function: (name, call, exception type, message pattern). A tensor argument that
# is not a tensor is named, not echoed; numbers must be numbers of the right kind and range (no silent int(2.7)).
PUBLIC_BAD_ARGUMENTS = [
    ("poly_numpy_x", lambda: pykernels.poly(np.ones(3), t(2)), TypeError, r"^x must be a torch.Tensor, got ndarray$"),
    ("poly_mse_list_y", lambda: pykernels.poly_mse(t(3), [1.0] * 3, t(2)), TypeError, r"^y must be a torch.Tensor"),
    ("dot_numpy_b", lambda: pykernels.dot(t(3), np.ones(3)), TypeError, r"^b must be a torch.Tensor, got ndarray$"),
    ("backend_not_str", lambda: pykernels.poly(t(3), t(2), backend=None), ValueError, r"backend must be one of"),
    ("fit_numpy_x", lambda: pykernels.fit_poly(np.ones(3), t(3), 1, lr=0.1, steps=2), TypeError, r"^x must be a"),
    (
        "fit_degree_negative",
        lambda: pykernels.fit_poly(t(3), t(3), -2, lr=0.1, steps=2),
        ValueError,
        r"degree must be >= 0, got -2",
    ),
    (
        "fit_degree_float",
        lambda: pykernels.fit_poly(t(3), t(3), 2.0, lr=0.1, steps=2),
        TypeError,
        r"degree must be an integer, got float 2.0",
    ),
    (
        "fit_steps_float",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=0.1, steps=2.7),
        TypeError,
        r"steps must be an integer, got float 2.7",
    ),
    (
        "fit_steps_bool",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=0.1, steps=True),
        TypeError,
        r"steps must be an integer, got bool",
    ),
    (
        "fit_lr_str",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr="0.1", steps=2),
        TypeError,
        r"lr must be a real number, got str",
    ),
    (
        "fit_lr_nan",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=math.nan, steps=2),
        ValueError,
        r"lr must be finite and >= 0.0, got nan",
    ),
    (
        "fit_lr_negative",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=-0.1, steps=2),
        ValueError,
        r"lr must be finite and >= 0.0, got -0.1",
    ),
    (
        "fit_record_every_0",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=0.1, steps=2, record_every=0),
        ValueError,
        r"record_every must be >= 1, got 0",
    ),
    (
        "fit_init_0d",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=0.1, steps=2, init=torch.tensor(0.0)),
        ValueError,
        r"init must have shape \(degree \+ 1,\)",
    ),
    (
        "fit_init_list",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=0.1, steps=2, init=[0.0, 0.0]),
        TypeError,
        r"^init must be a torch.Tensor, got list$",
    ),
    (
        "step_lr_none",
        lambda: pykernels.linear_sgd_step(t(3), t(1), t(3), t(), None),
        TypeError,
        r"lr must be a real number, got NoneType",
    ),
    (
        "step_w_numpy",
        lambda: pykernels.linear_sgd_step(np.ones(3), t(1), t(3), t(), 0.1),
        TypeError,
        r"^w must be a torch.Tensor",
    ),
    ("normal_n_float", lambda: pykernels.philox_normal(2.5, seed=1), TypeError, r"n must be an integer, got float 2.5"),
    ("normal_n_negative", lambda: pykernels.philox_normal(-1, seed=1), ValueError, r"n must be >= 0, got -1"),
    (
        "normal_seed_float",
        lambda: pykernels.philox_normal(4, seed=1.5),
        TypeError,
        r"seed must be an integer, got float 1.5",
    ),
    (
        "normal_seed_negative",
        lambda: pykernels.philox_normal(4, seed=-1),
        ValueError,
        r"seed must be in \[0, 2\^64\), got -1",
    ),
    ("normal_seed_2_64", lambda: pykernels.philox_normal(4, seed=2**64), ValueError, r"seed must be in \[0, 2\^64\)"),
    (
        "normal_stream_2_63",
        lambda: pykernels.philox_normal(4, seed=1, stream=2**63),
        ValueError,
        r"stream must be in \[0, 2\^63\)",
    ),
    (
        "normal_out_numpy",
        lambda: pykernels.philox_normal(4, seed=1, out=np.ones(4)),
        TypeError,
        r"^out must be a torch.Tensor",
    ),
    (
        "philox_epochs_0",
        lambda: pykernels.linear_sgd_philox(t(4), t(1), lr=0.1, epochs=0, seed=1),
        ValueError,
        r"epochs must be >= 1, got 0",
    ),
    (
        "philox_streams_past_2_63",
        lambda: pykernels.linear_sgd_philox(t(4), t(1), lr=0.1, epochs=2, seed=1, first_epoch=2**63 - 1),
        ValueError,
        r"first_epoch must be in \[0, 2\^63 - 2\] \(the 2 streams from it stay below 2\^63\), got 9223372036854775807",
    ),
    (
        "philox_seed_float",
        lambda: pykernels.linear_sgd_philox(t(4), t(1), lr=0.1, epochs=1, seed=2.0),
        TypeError,
        r"seed must be an integer, got float",
    ),
    (
        "function_numpy",
        lambda: pykernels.PolyMSE.apply(np.ones(3), t(3), t(2)),
        TypeError,
        r"^x must be a torch.Tensor, got ndarray$",
    ),
    ("function_backend", lambda: pykernels.Dot.apply(t(3), t(3), "fortran"), ValueError, r"backend must be one of"),
    (
        "register_name",
        lambda: pykernels.register_backend(3, lambda: None),
        TypeError,
        r"name must be a non-empty str, got int 3",
    ),
    ("register_loader", lambda: pykernels.register_backend("mine", None), TypeError, r"loader must be a callable"),
    (
        "warmup_dtypes",
        lambda: pykernels.numba.warmup(dtypes=(np.int32,)),
        ValueError,
        r"dtypes must name float32 and/or float64",
    ),
    ("model_degree", lambda: pykernels.distributed.PolyFitModel(-1), ValueError, r"degree must be >= 0, got -1"),
    (
        "fit_steps_beyond_int64",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=0.1, steps=2**63),
        ValueError,
        r"steps must be <= 2\^63 - 1, got 9223372036854775808",
    ),
    (
        "fit_lr_beyond_float",
        lambda: pykernels.fit_poly(t(3), t(3), 1, lr=10**400, steps=2),
        ValueError,
        r"lr must be finite and >= 0.0, got inf",
    ),
    (
        "fit_degree_tensor",
        lambda: pykernels.fit_poly(t(3), t(3), torch.zeros(1000), lr=0.1, steps=2),
        TypeError,
        r"degree must be an integer, got Tensor of shape \[1000\]$",
    ),
    (
        "poly_sparse_x",
        lambda: pykernels.poly(torch.eye(3).to_sparse(), t(2)),
        TypeError,
        r"x must be a dense \(strided\) tensor, got a sparse_coo tensor",
    ),
    (
        "normal_device_and_out",
        lambda: pykernels.philox_normal(4, seed=1, out=torch.empty(4), device="meta"),
        ValueError,
        r"device \(meta\) must be out's device \(cpu\) or None when out is given",
    ),
    (
        "normal_out_strided",
        lambda: pykernels.philox_normal(4, seed=1, out=torch.empty(8)[::2]),
        ValueError,
        r"out must be contiguous \(it is written in place\), got strides \[2\]",
    ),
    ("demo_samples", lambda: pykernels.distributed.demo_data(0), ValueError, r"samples must be >= 1, got 0"),
]


@pytest.mark.parametrize(
    ("name", "call", "error", "pattern"), PUBLIC_BAD_ARGUMENTS, ids=[c[0] for c in PUBLIC_BAD_ARGUMENTS]
)
def test_public_functions_name_their_bad_arguments(name, call, error, pattern):
    with pytest.raises(error, match=pattern) as raised:
        call()
    assert len(str(raised.value)) < 300 and "array(" not in str(raised.value)  # named, never echoed


def test_a_loader_that_returns_no_backend_is_refused():
    pykernels.register_backend("broken", lambda: "not a backend")
    try:
        with pytest.raises(TypeError, match=r"the loader of backend 'broken' must return a Backend, got str"):
            pykernels.get_backend("broken")
    finally:
        pykernels._backends._LOADERS.pop("broken")


# --- every route ----------------------------------------------------------------------------------------------------

_X = torch.linspace(-1, 1, 30, dtype=f64)


def _fit(x, y, value):
    return tuple(pykernels.fit_poly(x, y, 2, lr=value, steps=5))


def _fit_degree(x, y, value):
    return tuple(pykernels.fit_poly(x, y, value, lr=0.1, steps=5))


def _fit_steps(x, y, value):
    return tuple(pykernels.fit_poly(x, y, 2, lr=0.1, steps=value, method="data"))


def _fit_record_every(x, y, value):
    return tuple(pykernels.fit_poly(x, y, 2, lr=0.1, steps=5, record_every=value))


def _moments_fit(x, y, value):
    return tuple(pykernels.fit_poly_moments(pykernels.poly_moments(x, y, 2), lr=value, steps=5))


def _sgd_step(x, y, value):
    return pykernels.linear_sgd_step(x.clone(), torch.zeros(1, dtype=f64), y, y[0], value)


def _normal(x, y, value):
    return pykernels.philox_normal(4, seed=value)


def _normal_stream(x, y, value):
    return pykernels.philox_normal(4, seed=1, stream=value)


def _philox_epochs(x, y, value):
    return pykernels.linear_sgd_philox(x.clone(), torch.zeros(1, dtype=f64), lr=0.01, epochs=value, seed=1)


# (name, call(x, y, value), a good value, a bad value, message): the bad value fails on every route, after a good
# call on the compiled route (the value is symbolic there: its check must hold as a guard of the compiled graph)
ROUTE_BAD_ARGUMENTS = [
    ("fit_lr_negative", _fit, 0.5, -0.5, r"lr must be finite and >= 0.0, got -0.5"),
    ("fit_lr_nan", _fit, 0.5, math.nan, r"lr must be finite and >= 0.0, got nan"),
    ("fit_lr_inf", _fit, 0.5, math.inf, r"lr must be finite and >= 0.0, got inf"),
    ("fit_degree_bool", _fit_degree, 2, True, r"degree must be an integer, got bool True"),
    ("fit_degree_negative", _fit_degree, 2, -1, r"degree must be >= 0, got -1"),
    ("fit_degree_float", _fit_degree, 2, 2.0, r"degree must be an integer, got float 2.0"),
    ("fit_steps_negative", _fit_steps, 3, -1, r"steps must be >= 0, got -1"),
    ("fit_record_every_0", _fit_record_every, 2, 0, r"record_every must be >= 1, got 0"),
    ("moments_fit_lr_nan", _moments_fit, 0.5, math.nan, r"lr must be finite and >= 0.0, got nan"),
    ("sgd_step_lr_negative", _sgd_step, 0.01, -1.0, r"lr must be finite and >= 0.0, got -1.0"),
    ("normal_seed_negative", _normal, 5, -1, r"seed must be in \[0, 2\^64\), got -1"),
    ("normal_seed_2_64", _normal, 2**64 - 1, 2**64, r"seed must be in \[0, 2\^64\), got 18446744073709551616"),
    ("normal_stream_negative", _normal_stream, 3, -1, r"stream must be in \[0, 2\^63\), got -1"),
    ("philox_epochs_0", _philox_epochs, 2, 0, r"epochs must be >= 1, got 0"),
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("name", "call", "good", "bad", "pattern"), ROUTE_BAD_ARGUMENTS, ids=[c[0] for c in ROUTE_BAD_ARGUMENTS]
)
def test_argument_checks_hold_on_every_route(route, name, call, good, bad, pattern):
    """torch.compile reports the exception as dynamo's "Observed exception ... raised exception ValueError('...')"
    under fullgraph (as it reports torch's own, F.dropout(p=-0.5)); the message is the eager one."""
    x, y = _X, torch.cos(_X)
    run = routed(route, call)
    if route == "compile":
        for got, want in zip(pytree_leaves(run(x, y, good)), pytree_leaves(call(x, y, good)), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(Exception, match=pattern):
        run(x, y, bad)


def pytree_leaves(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("seed", [2**63 - 1, 2**63, 2**63 + 5, 2**64 - 1])
def test_seeds_keep_their_64_bits_on_every_route(route, seed):
    """The README's promise, [0, 2^64): a seed past int64 travels as its bit pattern through compiled graphs too."""
    eager = pykernels.philox_normal(64, seed=seed)
    assert not torch.equal(eager, pykernels.philox_normal(64, seed=seed ^ 1))
    torch.testing.assert_close(routed(route, _normal)(_X, _X, seed), eager[:4], rtol=0, atol=0)


def test_a_bad_init_is_named_init():
    x, y = _X, torch.stack([torch.cos(_X)] * 3)
    with pytest.raises(ValueError, match=r"^init must have shape .* and B = y.shape\[0\] = 3, got \[2, 3\]$"):
        pykernels.fit_poly(x, y, 2, lr=0.1, steps=3, init=torch.zeros(2, 3, dtype=f64))
    with pytest.raises(ValueError, match=r"^init must have shape \(degree \+ 1,\) .*it is 1-D\), got \[3, 3\]$"):
        pykernels.fit_poly(x, y[0], 2, lr=0.1, steps=3, init=torch.zeros(3, 3, dtype=f64))
    with pytest.raises(
        TypeError, match=r"^init must be a floating-point tensor \(float32 or float64\), got torch.int64"
    ):
        pykernels.fit_poly(x, y, 2, lr=0.1, steps=3, init=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(RuntimeError, match=r"^init must be on the same device as y \(cpu\), got meta"):
        pykernels.fit_poly(x, y, 2, lr=0.1, steps=3, init=torch.zeros(3, dtype=f64, device="meta"))
    moments = pykernels.poly_moments(x, y, 2)
    with pytest.raises(
        ValueError, match=r"^init must have shape .*degree \+ 1 = cross_sums.shape\[-1\] = 3 .*got \[4\]"
    ):
        pykernels.fit_poly_moments(moments, lr=0.1, steps=3, init=torch.zeros(4, dtype=f64))
    with pytest.raises(ValueError, match=r"^init must have shape .* and B = cross_sums.shape\[0\] = 3, got \[2, 3\]"):
        pykernels.fit_poly_moments(moments, lr=0.1, steps=3, init=torch.zeros(2, 3))
    with pytest.raises(TypeError, match=r"^init must be a floating-point tensor"):
        pykernels.fit_poly_moments(moments, lr=0.1, steps=3, init=torch.zeros(3, dtype=torch.float16))


@pytest.mark.parametrize(
    ("arguments", "error", "pattern"),
    [
        ({"lr": -1.0, "steps": 10}, ValueError, r"^lr must be finite and >= 0.0, got -1.0$"),
        ({"lr": math.nan, "steps": 10}, ValueError, r"^lr must be finite and >= 0.0, got nan$"),
        ({"lr": 0.1, "steps": -1}, ValueError, r"^steps must be >= 0, got -1$"),
        ({"lr": 0.1, "steps": 2.5}, TypeError, r"^steps must be an integer, got float 2.5$"),
    ],
)
def test_choose_fit_method_checks_its_arguments(arguments, error, pattern):
    moments = pykernels.poly_moments(_X, torch.cos(_X), 2)
    with pytest.raises(error, match=pattern):
        pykernels.choose_fit_method(moments, dtype=f64, **arguments)
    with pytest.raises(TypeError, match=r"^moments must be a PolyMoments"):
        pykernels.choose_fit_method(moments[0], dtype=f64, lr=0.1, steps=10)


@pytest.mark.parametrize("make_out", [lambda tmp: tmp / "a_file", lambda tmp: tmp / "a_file" / "below"])
def test_study_checks_its_out_folder_before_any_work(tmp_path, capsys, make_out):
    """An existing file (or a file among the parents) is a usage error naming --out, from the argument parser:
    before the sections run for minutes."""
    from pykernels.study.__main__ import parse_args

    (tmp_path / "a_file").write_text("keep")
    with pytest.raises(SystemExit) as exited:
        parse_args(["--out", str(make_out(tmp_path)), "--quick"])
    assert exited.value.code == 2
    assert "argument --out:" in capsys.readouterr().err and "a_file" in str(make_out(tmp_path))
    assert (tmp_path / "a_file").read_text() == "keep"
    assert parse_args(["--out", str(tmp_path / "new" / "folder")]).out == tmp_path / "new" / "folder"


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"])
@pytest.mark.parametrize("shape", [(0,), (2, 0, 3)])
def test_poly_of_an_empty_x_is_empty(backend, shape):
    """As torch's elementwise ops: the README's "any shape of x"; coeffs' gradient is an empty sum, zeros."""
    x = torch.empty(shape, dtype=f64)
    coeffs = torch.tensor([1.0, 2.0, 3.0], dtype=f64, requires_grad=True)
    y = pykernels.poly(x, coeffs, backend=backend)
    assert y.shape == shape and y.dtype == f64
    y.sum().backward()
    assert torch.equal(coeffs.grad, torch.zeros(3, dtype=f64))
    with pytest.raises(TypeError, match=r"coeffs must have the same dtype as x"):
        pykernels.poly(torch.empty(0), coeffs, backend=backend)
