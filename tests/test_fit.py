"""fit_poly: the fused gradient-descent loop (single and batched) against the reference loop, the step-by-step
PolyMSE loop, its trace, its errors, opcheck and compile."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES, DTYPES, KERNEL_BACKENDS, RTOL, make_tensor

import pykernels
from pykernels import reference

STEPS, LR = 60, 1e-2

# (name, x shape, y shape, degree): single fits (one block and several), batched with shared and own x
FIT_CASES = [
    # degrees <= 8 run unrolled tiles of SIMD groups: one tile, several, several with the powers computed per step
    ("single_n1", (1,), (1,), 2),
    ("single_seed", (100,), (100,), 4),
    ("single_degree8", (20,), (20,), 8),
    ("single_tiles", (300,), (300,), 5),
    ("single_powers_on_the_fly", (2000,), (2000,), 5),
    ("single_degree0", (37,), (37,), 0),
    ("single_high_degree", (50,), (50,), 10),
    ("single_multiblock", (5000,), (5000,), 3),  # more points than one 16-lane x 256 block
    ("batched_shared_x", (40,), (37, 40), 4),  # 37 series: a partial tile of lanes
    ("batched_own_x", (5, 40), (5, 40), 3),
]


def _case_data(x_shape, y_shape, degree, dtype, device):
    x = make_tensor(x_shape, dtype, device, low=-1, high=1, seed=11)
    y = make_tensor(y_shape, dtype, device, low=-1, high=1, seed=12)
    init = make_tensor(((y_shape[0],) if len(y_shape) == 2 else ()) + (degree + 1,), dtype, device, seed=13)
    return x, y, init


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "x_shape", "y_shape", "degree"), FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_matches_the_reference_loop(backend, dtype, device, name, x_shape, y_shape, degree):
    if device == "cuda" and backend != "cpp":
        pytest.skip("the numba backend's fit_poly runs on the CPU only")
    x, y, init = _case_data(x_shape, y_shape, degree, dtype, device)
    fit = pykernels.fit_poly(x, y, degree, lr=LR, steps=STEPS, init=init, backend=backend)
    expected_coeffs, expected_trace = reference.fit_poly_torch(x.double(), y.double(), init.double(), LR, STEPS)
    assert fit.coeffs.shape == init.shape and fit.trace.shape == expected_trace.shape
    assert fit.coeffs.dtype == dtype and fit.trace.dtype == dtype
    # float32 fits drift from float64 by rounding along the 60 steps
    rtol = RTOL[dtype] if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(fit.coeffs.double(), expected_coeffs, rtol=rtol, atol=rtol)
    torch.testing.assert_close(fit.trace.double(), expected_trace, rtol=rtol, atol=rtol)
    assert torch.equal(init, _case_data(x_shape, y_shape, degree, dtype, device)[2])  # init is not modified


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_fit_matches_the_step_by_step_poly_mse_loop(backend):
    """The seed problem, 2000 steps in float32: the fused loop against the manual poly_mse loop."""
    x = torch.linspace(0, 5, 100)
    y = torch.sin(x)
    w = torch.zeros(5)
    losses = []
    for _ in range(2000):
        loss, grad = pykernels.poly_mse(x, y, w, backend=backend)
        losses.append(loss)
        w = w - 1e-5 * grad
    fit = pykernels.fit_poly(x, y, 4, lr=1e-5, steps=2000, backend=backend)
    torch.testing.assert_close(fit.coeffs, w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fit.trace, torch.stack(losses), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("batched", [False, True])
def test_record_every_keeps_every_rth_loss(backend, batched):
    x = torch.linspace(-1, 1, 30, dtype=torch.float64)
    y = torch.stack([torch.cos(x), torch.sin(x)]) if batched else torch.cos(x)
    full = pykernels.fit_poly(x, y, 3, lr=0.05, steps=23, backend=backend)
    sparse = pykernels.fit_poly(x, y, 3, lr=0.05, steps=23, record_every=5, backend=backend)
    assert sparse.trace.shape[-1] == 5  # steps 0, 5, 10, 15, 20
    torch.testing.assert_close(sparse.trace, full.trace[..., ::5], rtol=0, atol=0)
    torch.testing.assert_close(sparse.coeffs, full.coeffs, rtol=0, atol=0)
    none = pykernels.fit_poly(x, y, 3, lr=0.05, steps=0, backend=backend)
    assert none.trace.shape[-1] == 0 and torch.equal(none.coeffs, torch.zeros_like(none.coeffs))


BAD_FITS = [
    ("y_3d", lambda t: (t(4), t(2, 2, 4), t(3)), ValueError, r"y must be 1-D \(N,\) or 2-D \(B, N\)"),
    ("x_mismatch", lambda t: (t(5), t(4), t(3)), ValueError, r"x must have shape \(N,\) or the shape of y"),
    ("coeffs_batch_mismatch", lambda t: (t(4), t(2, 4), t(3, 3)), ValueError, r"coeffs must be \(D\+1,\) or"),
    ("empty_y", lambda t: (t(0), t(0), t(3)), ValueError, r"y must not be empty"),
    ("integer_x", lambda t: (torch.ones(4, dtype=torch.int32), t(4), t(3)), TypeError, r"x must be a floating"),
]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [17, 5000])  # the SIMD kernel on one tile of groups; the one that widens block sums
@pytest.mark.parametrize("lr", [0.0, 0.1])
def test_a_coefficient_that_does_not_move_keeps_the_sign_of_its_zero(backend, dtype, n, lr):
    """init = -0 on y = 0: every step subtracts a zero, so the reference keeps -0 (the CPU kernel once returned +0,
    having broadcast the coefficients by adding them to a zero vector)."""
    x, y = torch.linspace(-1, 1, n, dtype=dtype), torch.zeros(n, dtype=dtype)
    init = torch.tensor([-0.0, -0.0], dtype=dtype)
    fit = pykernels.fit_poly(x, y, 1, lr=lr, steps=3, init=init, method="data", backend=backend)
    expected, _ = reference.fit_poly_torch(x.double(), y.double(), init.double(), lr, 3)
    assert torch.equal(fit.coeffs.double(), expected)  # both zeros
    assert torch.equal(torch.signbit(fit.coeffs), torch.signbit(expected)) and torch.signbit(expected).all()


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"])
@pytest.mark.parametrize(("name", "make", "error", "pattern"), BAD_FITS, ids=[c[0] for c in BAD_FITS])
def test_bad_fit_input_is_named(backend, name, make, error, pattern):
    x, y, init = make(lambda *shape: torch.ones(shape))
    with pytest.raises(error, match=pattern):
        pykernels.get_backend(backend).fit_poly(x, y, init, 0.1, 3, 1)


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"])
def test_bad_steps_and_record_every(backend):
    x = torch.ones(4)
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        pykernels.fit_poly(x, x, 2, lr=0.1, steps=-1, backend=backend)
    with pytest.raises(ValueError, match="record_every must be >= 1, got 0"):
        pykernels.fit_poly(x, x, 2, lr=0.1, steps=3, record_every=0, backend=backend)
    with pytest.raises(
        ValueError, match=r"init must have shape \(degree \+ 1,\) or \(B, degree \+ 1\) with degree \+ 1 = 3"
    ):
        pykernels.fit_poly(x, x, 2, lr=0.1, steps=3, init=torch.zeros(4), backend=backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fit_opcheck(backend, dtype):
    op = pykernels.get_backend(backend).fit_poly
    for _name, x_shape, y_shape, degree in FIT_CASES[:2] + FIT_CASES[-2:]:
        x, y, init = _case_data(x_shape, y_shape, degree, dtype, "cpu")
        torch.library.opcheck(op, (x, y, init, 0.01, 7, 3))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_fit_compiles_in_one_graph(backend):
    def fit_then_predict(x, y):
        coeffs, trace = pykernels.fit_poly(x, y, 3, lr=0.05, steps=20, backend=backend)
        return pykernels.poly(x, coeffs, backend=backend), trace

    x = torch.linspace(-1, 1, 30, dtype=torch.float64)
    y = torch.cos(x)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fit_then_predict)(x, y)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(fit_then_predict, fullgraph=True)
    for got, want in zip(compiled(x, y), fit_then_predict(x, y), strict=True):
        torch.testing.assert_close(got, want)
