"""Fits on sufficient statistics: poly_moments and fit_poly_moments against their references on every backend,
fit_poly(method="gram") against the data pass and float64 gradient descent, special values, errors, the torch
routes (opcheck, compile, vmap) and the choice fit_poly(method="auto") makes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import DEVICES, DTYPES, KERNEL_BACKENDS, ROUTES, make_tensor, routed

import pykernels
from pykernels import reference

# (name, x shape, y shape, degree, steps, record_every): single fits and batched fits that share x take 16-step
# jumps (degrees <= 8) with a stepwise tail, or step one at a time (higher degrees, fewer than 16 steps, batched
# fits with their own x)
MOMENT_CASES = [
    ("seed", (100,), (100,), 4, 203, 1),
    ("few_steps", (30,), (30,), 3, 7, 1),
    ("record_every_3", (50,), (50,), 2, 100, 3),
    ("record_every_past_a_jump", (50,), (50,), 5, 333, 11),
    ("degree0", (20,), (20,), 0, 64, 1),
    ("degree8", (40,), (40,), 8, 80, 1),
    ("high_degree", (40,), (40,), 10, 50, 2),
    ("one_point", (1,), (1,), 2, 16, 1),
    ("many_points", (100_003,), (100_003,), 3, 40, 1),  # several chunks: the threaded pass
    ("batched_shared_x", (40,), (37, 40), 4, 50, 1),  # 37 series: a partial group of lanes
    ("batched_own_x", (5, 40), (5, 40), 3, 50, 4),
    ("batched_high_degree", (40,), (9, 40), 9, 20, 1),
    ("batched_degree0", (20,), (9, 20), 0, 64, 1),  # shared x: 16-step jumps, SIMD across series
    ("batched_degree8", (40,), (11, 40), 8, 83, 3),
]
LR = 0.05


def _data(x_shape, y_shape, degree, dtype, device, seed=0):
    x = make_tensor(x_shape, dtype, device, low=-1, high=1, seed=seed + 1)
    y = make_tensor(y_shape, dtype, device, low=-1, high=1, seed=seed + 2)
    init = make_tensor(((y_shape[0],) if len(y_shape) == 2 else ()) + (degree + 1,), dtype, device, seed=seed + 3)
    return x, y, init


def _lr(degree):
    return LR / (degree + 1)  # stable for x in [-1, 1]: lambda_max(A) <= D + 1


def _skip_numba_on_cuda(backend, device):
    if device == "cuda" and backend == "numba":
        pytest.skip("the numba backend's fits run on the CPU")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("name", "x_shape", "y_shape", "degree", "steps", "every"), MOMENT_CASES, ids=[c[0] for c in MOMENT_CASES]
)
def test_moments_and_their_fit_match_the_references(
    backend, dtype, device, name, x_shape, y_shape, degree, steps, every
):
    x, y, init = _data(x_shape, y_shape, degree, dtype, device)
    moments = pykernels.poly_moments(x, y, degree, backend=backend)
    expected = reference.poly_moments_torch(x, y, degree)
    for got, want in zip(moments, expected, strict=True):
        assert got.dtype == torch.float64 and got.shape == want.shape and got.device == x.device
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13 * x.shape[-1])
    fit = pykernels.fit_poly_moments(
        moments, lr=_lr(degree), steps=steps, record_every=every, init=init, backend=backend
    )
    want_coeffs, want_trace = reference.fit_poly_moments_torch(*expected, init.double(), _lr(degree), steps, every)
    assert fit.coeffs.dtype == dtype and fit.trace.dtype == dtype
    assert fit.coeffs.shape == want_coeffs.shape and fit.trace.shape == want_trace.shape
    rtol = 1e-11 if dtype == torch.float64 else 2e-7  # float64 iterates; float32 results rounded once
    torch.testing.assert_close(fit.coeffs.double(), want_coeffs.double(), rtol=rtol, atol=rtol)
    torch.testing.assert_close(fit.trace.double(), want_trace.double(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("x_shape", "y_shape"), [((60,), (60,)), ((60,), (3, 60)), ((3, 60), (3, 60))])
def test_gram_fit_is_the_data_fit(backend, dtype, x_shape, y_shape):
    """The same iterates in exact arithmetic: fit_poly's two methods agree to the data pass's rounding."""
    x, y, init = _data(x_shape, y_shape, 3, dtype, "cpu")
    gram = pykernels.fit_poly(x, y, 3, lr=0.1, steps=120, init=init, method="gram", backend=backend)
    exact = reference.fit_poly_torch(x.double(), y.double(), init.double(), 0.1, 120)
    rtol = 1e-11 if dtype == torch.float64 else 1e-4  # float32: the data pass's own rounding is compared with
    data = pykernels.fit_poly(x, y, 3, lr=0.1, steps=120, init=init, method="data", backend=backend)
    for got in (gram, data):
        torch.testing.assert_close(got.coeffs.double(), exact[0], rtol=rtol, atol=rtol)
        torch.testing.assert_close(got.trace.double(), exact[1], rtol=rtol, atol=rtol)


def test_the_seed_fit_by_gram_is_float64_gradient_descent():
    """The write-up's fit, 200,000 steps from float32 data: gram's coefficients are float64 gradient descent's
    on the same points to rtol 1e-6 (the float32 data pass is off by its rounding), and the final MSE too."""
    x = torch.linspace(0, 5, 100)
    y = torch.sin(x)
    exact = pykernels.fit_poly(x.double(), y.double(), 4, lr=1e-5, steps=200_000, method="data")
    gram = pykernels.fit_poly(x, y, 4, lr=1e-5, steps=200_000, method="gram")
    assert gram.coeffs.dtype == torch.float32
    torch.testing.assert_close(gram.coeffs.double(), exact.coeffs, rtol=1e-6, atol=0)
    torch.testing.assert_close(gram.trace.double(), exact.trace, rtol=1e-6, atol=0)
    assert abs(exact.trace[-1].item() - 0.00790251) < 5e-9


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("growth", [81.0, 1.1], ids=["fast", "slow"])
def test_a_diverging_fit_overflows_as_the_stepwise_reference(backend, batched, growth):
    """lr too large: the iterates grow x|1 - 2 lr lambda_max| per step until inf, then NaN. The single fit's jumps
    hand such a stretch to the stepwise loop, and the batched fit's FMA segments to its exact loop: the same steps
    overflow, with the same special values. Slowly (x1.1 per step, ~7,500 steps) the batched fit runs FMA segments
    for the first ~3,000 steps, then exact ones."""
    x = torch.linspace(-1, 1, 50, dtype=torch.float64)
    y = torch.stack([torch.cos(x), torch.sin(x)]) if batched else torch.cos(x)
    moments = pykernels.poly_moments(x, y, 3, backend=backend)
    gram = pykernels._auto.gram_matrix(moments.power_sums.numpy(), 4, np)
    lr = (growth + 1) / (2 * float(np.linalg.eigvalsh(gram)[-1]))
    steps = 400 if growth > 2 else 8000
    fit = pykernels.fit_poly_moments(moments, lr=lr, steps=steps, backend=backend)
    want = reference.fit_poly_moments_torch(*moments, torch.zeros(4, dtype=torch.float64), lr, steps)
    for got, expected in zip(fit, want, strict=True):
        assert not torch.isfinite(expected).all()  # the case overflows
        assert torch.equal(torch.isnan(got), torch.isnan(expected))
        assert torch.equal(torch.isposinf(got), torch.isposinf(expected))
        assert torch.equal(torch.isneginf(got), torch.isneginf(expected))
        finite = torch.isfinite(expected)
        # FMAs round differently: a loss that passes near 0 on the way up (|loss| ~1e-7) keeps an absolute 2e-16
        torch.testing.assert_close(got[finite], expected[finite], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("special", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("where", ["x", "y"])
def test_special_values_in_the_data_propagate_as_in_the_reference(backend, special, where):
    x = torch.linspace(-1, 1, 30, dtype=torch.float64)
    y = torch.cos(x)
    (x if where == "x" else y)[7] = special
    moments = pykernels.poly_moments(x, y, 2, backend=backend)
    want = reference.poly_moments_torch(x, y, 2)
    for got, expected in zip(moments, want, strict=True):
        torch.testing.assert_close(got, expected, equal_nan=True)
    fit = pykernels.fit_poly_moments(moments, lr=0.1, steps=20, backend=backend)
    want_fit = reference.fit_poly_moments_torch(*want, torch.zeros(3, dtype=torch.float64), 0.1, 20)
    for got, expected in zip(fit, want_fit, strict=True):
        torch.testing.assert_close(got, expected, equal_nan=True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_sums_over_shards_add_up_to_the_whole(backend):
    """What pykernels.distributed all-reduces: the moments of disjoint shards sum to those of all the data."""
    x, y, _ = _data((1000,), (1000,), 4, torch.float32, "cpu")
    whole = pykernels.poly_moments(x, y, 4, backend=backend)
    parts = [pykernels.poly_moments(x[i::3], y[i::3], 4, backend=backend) for i in range(3)]
    for index, total in enumerate(whole):
        torch.testing.assert_close(sum(p[index] for p in parts), total, rtol=1e-13, atol=0)


# --- errors --------------------------------------------------------------------------------------------------------


def _sums(degree=2, batch=()):
    return (
        torch.ones((*batch, 2 * degree + 1), dtype=torch.float64),
        torch.ones((*batch, degree + 1), dtype=torch.float64),
        torch.ones(batch, dtype=torch.float64),
    )


BAD_MOMENT_FITS = [
    (
        "float32_sums",
        lambda: (_sums()[0].float(), *_sums()[1:], torch.zeros(3)),
        TypeError,
        r"^power_sums must be a float64 tensor \(as poly_moments returns it\), got torch.float32",
    ),
    (
        "integer_coeffs",
        lambda: (*_sums(), torch.zeros(3, dtype=torch.int64)),
        TypeError,
        r"^coeffs must be a floating-point tensor",
    ),
    (
        "wrong_cross_length",
        lambda: (*_sums(), torch.zeros(4)),
        ValueError,
        r"^cross_sums must be \(D\+1,\) or \(B, D\+1\) with D\+1 = coeffs.shape\[-1\] = 4, got \[3\]",
    ),
    (
        "wrong_power_length",
        lambda: (torch.ones(4, dtype=torch.float64), *_sums()[1:], torch.zeros(3)),
        ValueError,
        r"^power_sums must be \(2D\+1,\) or \(B, 2D\+1\) with 2D\+1 = 5, got \[4\]",
    ),
    (
        "batched_square_sum",
        lambda: (*_sums(batch=(2,))[:2], torch.ones((), dtype=torch.float64), torch.zeros(3)),
        ValueError,
        r"^square_sum must be \(B,\) with B = cross_sums.shape\[0\], got shape \[\]",
    ),
    (
        "coeffs_batch_mismatch",
        lambda: (*_sums(batch=(2,)), torch.zeros(3, 3)),
        ValueError,
        r"^coeffs must be \(D\+1,\) or \(B, D\+1\) with B = cross_sums.shape\[0\], got \[3, 3\]",
    ),
    (
        "batched_powers_for_one_fit",
        lambda: (_sums(batch=(2,))[0], *_sums()[1:], torch.zeros(3)),
        ValueError,
        r"^power_sums must be \(2D\+1,\) or \(B, 2D\+1\)",
    ),
]


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"])
@pytest.mark.parametrize(("name", "make", "error", "pattern"), BAD_MOMENT_FITS, ids=[c[0] for c in BAD_MOMENT_FITS])
def test_bad_moments_are_named(backend, name, make, error, pattern):
    with pytest.raises(error, match=pattern):
        pykernels.get_backend(backend).fit_poly_moments(*make(), 0.1, 3, 1)


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "torch"])
def test_bad_moments_input_is_named(backend):
    ops = pykernels.get_backend(backend)
    with pytest.raises(ValueError, match=r"^degree must be in \[0, 2\^62\), got -1"):
        ops.poly_moments(torch.ones(3), torch.ones(3), -1)
    with pytest.raises(ValueError, match=r"^x must have shape \(N,\) or the shape of y"):
        ops.poly_moments(torch.ones(4), torch.ones(3), 2)
    with pytest.raises(TypeError, match=r"^y must have the same dtype as x"):
        ops.poly_moments(torch.ones(3), torch.ones(3, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match=r"^y must not be empty"):
        ops.poly_moments(torch.ones(0), torch.ones(0), 2)


def test_bad_method_and_moments_arguments_are_named():
    x = torch.ones(4)
    with pytest.raises(ValueError, match=r"^method must be one of 'auto', 'gram', 'data', got 'normal'"):
        pykernels.fit_poly(x, x, 2, lr=0.1, steps=3, method="normal")
    with pytest.raises(TypeError, match=r"^moments must be a PolyMoments"):
        pykernels.fit_poly_moments(torch.ones(5), lr=0.1, steps=3)
    moments = pykernels.poly_moments(x, x, 2)
    with pytest.raises(ValueError, match=r"^give dtype or init, not both"):
        pykernels.fit_poly_moments(moments, lr=0.1, steps=3, init=torch.zeros(3), dtype=torch.float32)
    with pytest.raises(TypeError, match=r"^dtype must be torch.float32, torch.float64 or None"):
        pykernels.fit_poly_moments(moments, lr=0.1, steps=3, dtype=torch.float16)
    with pytest.raises(TypeError, match=r"^init must have the dtype of x and y \(torch.float32\), got torch.float64"):
        pykernels.fit_poly(x, x, 2, lr=0.1, steps=3, init=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^x must have shape \(N,\) or the shape of y"):  # before the moments' pass
        pykernels.fit_poly(torch.ones(5), x, 2, lr=0.1, steps=3, method="gram")


def test_fit_poly_moments_defaults():
    x = torch.linspace(-1, 1, 20)
    moments = pykernels.poly_moments(x, x * x, 2)
    fit = pykernels.fit_poly_moments(moments, lr=0.2, steps=300)
    assert fit.coeffs.dtype == torch.float64 and fit.trace.shape == (300,)
    torch.testing.assert_close(fit.coeffs, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=2e-2, rtol=0)
    assert pykernels.fit_poly_moments(moments, lr=0.2, steps=3, dtype=torch.float32).coeffs.dtype == torch.float32


# --- the torch routes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_opcheck(backend, dtype):
    ops = pykernels.get_backend(backend)
    for _name, x_shape, y_shape, degree, _steps, _every in (MOMENT_CASES[0], MOMENT_CASES[-3], MOMENT_CASES[-2]):
        x, y, init = _data(x_shape, y_shape, degree, dtype, "cpu")
        torch.library.opcheck(ops.poly_moments, (x, y, degree))
        moments = ops.poly_moments(x, y, degree)
        torch.library.opcheck(ops.fit_poly_moments, (*moments, init, 0.01, 11, 3))
        if backend == "cpp":  # what fit_poly(method="auto") calls on the CPU
            torch.library.opcheck(torch.ops.pykernels._fit_poly_moments_checked.default, (*moments, init, 0.01, 11, 3))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_gram_fit_compiles_in_one_graph(backend):
    def fit_then_predict(x, y):
        coeffs, trace = pykernels.fit_poly(x, y, 3, lr=0.05, steps=20, method="gram", backend=backend)
        return pykernels.poly(x, coeffs, backend=backend), trace

    x = torch.linspace(-1, 1, 30, dtype=torch.float64)
    y = torch.cos(x)
    torch._dynamo.reset()
    compiled = torch.compile(fit_then_predict, fullgraph=True)
    for got, want in zip(compiled(x, y), fit_then_predict(x, y), strict=True):
        torch.testing.assert_close(got, want)


AUTO_CASES = [  # (x, y, degree, lr, steps): the choice fit_poly(method="auto") makes, then its check of the loss
    ("statistics", torch.linspace(-1, 1, 30, dtype=torch.float64), lambda x: torch.cos(x), 3, 0.05, 20),
    (
        "data_pass_ill_conditioned",
        torch.linspace(1, 2, 200, dtype=torch.float64),
        lambda x: torch.sin(3 * x),
        6,
        4e-4,
        1_000_000,
    ),
    (
        "data_pass_nearly_exact",
        torch.linspace(-1, 1, 100, dtype=torch.float64),
        lambda x: 0.5 - x + 2 * x**3,
        3,
        0.225,
        20_000,
    ),
]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize(("name", "x", "f", "degree", "lr", "steps"), AUTO_CASES, ids=[c[0] for c in AUTO_CASES])
def test_auto_fit_compiles_in_one_graph_and_chooses_as_eager(backend, name, x, f, degree, lr, steps):
    """Under torch.compile the data-dependent choice is a torch.cond of the graph: no break, the same result."""

    def fit(x, y):
        return pykernels.fit_poly(x, y, degree, lr=lr, steps=steps, record_every=1000, backend=backend)

    y = f(x)
    expected_method = "gram" if name == "statistics" else "data"
    eager = fit(x, y)
    chosen = pykernels.fit_poly(
        x, y, degree, lr=lr, steps=steps, record_every=1000, method=expected_method, backend=backend
    )
    assert torch.equal(eager.coeffs, chosen.coeffs) and torch.equal(eager.trace, chosen.trace)
    torch._dynamo.reset()
    compiled = torch.compile(fit, fullgraph=True)(x, y)
    torch.testing.assert_close(compiled.coeffs, eager.coeffs, rtol=0, atol=0)
    torch.testing.assert_close(compiled.trace, eager.trace, rtol=0, atol=0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_moments_under_vmap(backend):
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    ys = torch.stack([torch.cos(x), torch.sin(x), x**2])
    mapped = torch.func.vmap(lambda y: pykernels.poly_moments(x, y, 2, backend=backend))(ys)
    batched = pykernels.poly_moments(x, ys, 2, backend=backend)
    torch.testing.assert_close(mapped[1:], batched[1:])
    torch.testing.assert_close(mapped[0], batched[0].expand(3, -1))
    fits = torch.func.vmap(lambda m1, m2: pykernels.fit_poly_moments((batched[0], m1, m2), lr=0.1, steps=5).coeffs)(
        batched[1], batched[2]
    )
    torch.testing.assert_close(fits, pykernels.fit_poly_moments(batched, lr=0.1, steps=5).coeffs)


# --- the choice of fit_poly(method="auto") ---------------------------------------------------------------------------


def test_auto_steps_on_the_statistics_for_the_seed_fit():
    x = torch.linspace(0, 5, 100)
    moments = pykernels.poly_moments(x, torch.sin(x), 4)
    assert pykernels.choose_fit_method(moments, lr=1e-5, steps=200_000, dtype=torch.float32) == "gram"
    # one step: the statistics' pass costs more than the step it saves
    assert pykernels.choose_fit_method(moments, lr=1e-5, steps=1, dtype=torch.float32) == "data"


def test_auto_gives_the_method_it_chose():
    x = torch.linspace(0, 5, 100, dtype=torch.float64)
    y = torch.sin(x)
    auto = pykernels.fit_poly(x, y, 4, lr=1e-5, steps=2000)
    gram = pykernels.fit_poly(x, y, 4, lr=1e-5, steps=2000, method="gram")
    assert torch.equal(auto.coeffs, gram.coeffs) and torch.equal(auto.trace, gram.trace)


def _stable_problem(low, high, degree, dtype=torch.float64):
    """200 points on [low, high], y = sin of them mapped to [0, 3], lr = 0.45 / lambda_max(A)."""
    x = torch.linspace(low, high, 200, dtype=dtype)
    y = torch.sin(3 * (x - low) / (high - low))
    moments = pykernels.poly_moments(x, y, degree)
    largest = np.linalg.eigvalsh(pykernels.reference.gram_system_torch(*moments)[0].numpy())[-1]
    return x, y, moments, 0.45 / largest


@pytest.mark.parametrize(("low", "high", "degree"), [(1, 2, 6), (0, 5, 4), (-1, 1, 10)])
def test_auto_switches_to_the_data_pass_where_the_bound_passes_the_tolerance(low, high, degree):
    """cond(A) of 1e7-1e14: the statistics' rounding acts at every step, and after T steps its bound is about
    eps_64 T at a stable lr; float64 data switches to the data pass between 10^5 and 10^6 steps (bound 1e-10),
    float32 data only past 10^8 (float32's own rounding)."""
    x, y, moments, lr = _stable_problem(low, high, degree)
    choose = pykernels.choose_fit_method
    assert choose(moments, lr=lr, steps=100_000, dtype=torch.float64) == "gram"
    assert choose(moments, lr=lr, steps=1_000_000, dtype=torch.float64) == "data"
    assert choose(moments, lr=lr, steps=1_000_000, dtype=torch.float32) == "gram"
    bound = pykernels.ops.gram_error_bound(moments, lr=lr, steps=20_000)
    assert 1e-13 < bound < 1e-10
    # under it, the statistics' iterates are the data pass's to the bound (the data pass is exact to ~1e-15 here),
    # single fits and batched ones on the same x (their jumps SIMD across series)
    batch = torch.stack([y, 0.5 * y - 0.25, torch.cos(x)])
    for ys in (y, batch):
        gram = pykernels.fit_poly(x, ys, degree, lr=lr, steps=20_000, record_every=1000, method="gram")
        data = pykernels.fit_poly(x, ys, degree, lr=lr, steps=20_000, record_every=1000, method="data")
        errors = (gram.coeffs - data.coeffs).norm(dim=-1) / data.coeffs.norm(dim=-1)
        assert (
            errors <= pykernels.ops.gram_error_bound(pykernels.poly_moments(x, ys, degree), lr=lr, steps=20_000)
        ).all()


def test_a_well_conditioned_fit_stays_on_the_statistics():
    _, _, moments, lr = _stable_problem(-1, 1, 2)
    assert pykernels.ops.gram_error_bound(moments, lr=lr, steps=10**7) < 1e-14
    assert pykernels.choose_fit_method(moments, lr=lr, steps=10**7, dtype=torch.float64) == "gram"


def test_choose_fit_method_reads_the_worst_series_of_a_batch():
    x = torch.stack([torch.linspace(-1, 1, 200, dtype=torch.float64), torch.linspace(1, 2, 200, dtype=torch.float64)])
    moments = pykernels.poly_moments(x, torch.cos(x), 6)
    lr = 0.45 / 7
    first = pykernels.PolyMoments(moments.power_sums[0], moments.cross_sums[0], moments.square_sum[0])
    assert pykernels.choose_fit_method(first, lr=lr, steps=10**6, dtype=torch.float64) == "gram"
    assert pykernels.choose_fit_method(moments, lr=lr, steps=10**6, dtype=torch.float64) == "data"


def test_sums_that_are_not_finite_choose_the_data_pass():
    moments = pykernels.poly_moments(torch.tensor([1.0, math.inf]), torch.ones(2), 1)
    assert pykernels.ops.gram_error_bound(moments, lr=0.1, steps=10) == math.inf
    assert pykernels.choose_fit_method(moments, lr=0.1, steps=10, dtype=torch.float32) == "data"


def test_auto_measures_the_loss_of_a_nearly_exact_fit_on_the_data():
    """y a cubic, fitted by a cubic: the loss falls to ~1e-25 of y^T y / N, where the quadratic form c.A c - 2 c.b + s
    (terms of size s) is rounding noise. method="gram" returns that noise; auto sees it
    (gram_loss_error_bound > 1e-10) and runs the data pass."""
    x = torch.linspace(-1, 1, 100, dtype=torch.float64)
    y = 0.5 - x + 2 * x**3
    steps, lr = 20_000, 0.45 / 2
    gram = pykernels.fit_poly(x, y, 3, lr=lr, steps=steps, method="gram")
    data = pykernels.fit_poly(x, y, 3, lr=lr, steps=steps, method="data")
    assert data.trace[-1] < 1e-20
    assert (gram.trace[-1] - data.trace[-1]).abs() > data.trace[-1]  # the noise, by more than the loss itself
    assert pykernels.ops.gram_loss_error_bound(pykernels.poly_moments(x, y, 3), gram.coeffs, gram.trace[-1]) > 1e-10
    auto = pykernels.fit_poly(x, y, 3, lr=lr, steps=steps)
    assert torch.equal(auto.coeffs, data.coeffs) and torch.equal(auto.trace, data.trace)


# --- found by a hostile review ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("batch", [None, 10])
def test_jumps_stop_before_a_step_could_overflow(backend, batch):
    """Huge A (x up to 1000), lr past stability, no loss recorded: the stepwise loop overflows in u = A c (then NaN)
    while M^16 c does not; the jumps must hand those steps to the stepwise loop. A batch on the same x mixes series
    that diverge so with ones that stay at zero (y = 0)."""
    x = torch.linspace(0, 1000, 50, dtype=torch.float64)
    y = torch.sin(x / 100)
    if batch:
        y = y * (torch.arange(batch) % 3 != 1).double()[:, None]
    moments = reference.poly_moments_torch(x, y, 2)
    lr = 1.5 / np.linalg.eigvalsh(reference.gram_system_torch(*moments)[0].numpy())[-1]
    init = torch.zeros(*y.shape[:-1], 3, dtype=torch.float64)
    for steps in (1016, 1024, 1040):
        got = pykernels.get_backend(backend).fit_poly_moments(*moments, init, lr, steps, 10**9)
        want = reference.fit_poly_moments_torch(*moments, init, lr, steps, 10**9)
        assert not torch.isfinite(want[0]).all()
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, equal_nan=True, rtol=1e-9, atol=0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("batch", [None, 3, 33])
def test_the_update_is_rounded_as_the_reference_rounds_it(backend, batch):
    """c -= 2 lr (u - b) overflows in the product first (inf, then NaN) in the reference; a fused multiply-add
    would keep it finite one step longer."""
    x = torch.linspace(-1, -0.99, 35, dtype=torch.float64)
    y = torch.randn((batch, 35) if batch else 35, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    moments = reference.poly_moments_torch(x, y, 0)
    init = torch.zeros(1, dtype=torch.float64)
    got = pykernels.get_backend(backend).fit_poly_moments(*moments, init, 1.5, 1031, 1)
    want = reference.fit_poly_moments_torch(*moments, init, 1.5, 1031, 1)
    for g, w in zip(got, want, strict=True):
        assert not torch.isfinite(w).all()
        torch.testing.assert_close(g, w, equal_nan=True, rtol=1e-9, atol=0)


@pytest.mark.parametrize("scale", [1e154, 1e200])
def test_auto_takes_the_data_pass_where_the_statistics_overflow(scale):
    """y^2 beyond float64: the statistics' losses are inf or NaN where the data pass's are finite (or inf): auto
    returns the data pass's."""
    x = torch.linspace(0, 1, 200, dtype=torch.float64)
    y = scale * torch.sin(3 * x)
    auto = pykernels.fit_poly(x, y, 4, lr=0.5, steps=200)
    data = pykernels.fit_poly(x, y, 4, lr=0.5, steps=200, method="data")
    torch.testing.assert_close(auto.trace, data.trace, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(auto.coeffs, data.coeffs, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["auto", "gram", "data"])
def test_a_trace_length_near_2_63_does_not_overflow(method):
    """ceil(steps / record_every) computed as (steps + record_every - 1) / record_every wrapped to 0: the first
    recorded loss then went past an empty trace (a segfault). One step past 2^63 / 2 records two losses."""
    x = torch.linspace(-1, 1, 10, dtype=torch.float64)
    moments = pykernels.poly_moments(x, x, 1)
    fit = pykernels.fit_poly_moments(moments, lr=0.1, steps=0, record_every=2**63 - 1)
    assert fit.trace.shape == (0,)
    trace_length = torch.ops.pykernels.fit_poly_moments(*moments, torch.zeros(2, dtype=torch.float64), 0.1, 3, 2**62)
    assert trace_length[1].shape == (1,)
    assert pykernels.fit_poly(x, x, 1, lr=0.1, steps=3, record_every=2**63 - 1, method=method).trace.shape == (1,)


def test_auto_compiles_again_for_another_lr_and_n():
    """After recompiles (a new N, then a new lr) torch.compile makes lr a symbolic float, which torch.cond's
    branches cannot take: auto specializes on it."""

    def fit(x, y, lr):
        return pykernels.fit_poly(x, y, 4, lr=lr, steps=100)

    torch._dynamo.reset()
    compiled = torch.compile(fit, backend="aot_eager", fullgraph=True)
    for n, lr in ((200, 0.5), (300, 0.5), (300, 0.4), (400, 0.3)):
        x = torch.linspace(0, 1, n, dtype=torch.float64)
        y = torch.sin(3 * x)
        torch.testing.assert_close(compiled(x, y, lr).coeffs, fit(x, y, lr).coeffs, rtol=0, atol=0)


def test_auto_exports_with_a_dynamic_number_of_points():
    class Fit(torch.nn.Module):
        def forward(self, x, y):
            fit = pykernels.fit_poly(x, y, 4, lr=0.5, steps=100)
            return fit.coeffs, fit.trace

    x = torch.linspace(0, 1, 300, dtype=torch.float64)
    y = torch.sin(3 * x)
    points = torch.export.Dim("points")
    program = torch.export.export(Fit(), (x, y), dynamic_shapes=({0: points}, {0: points}))
    for n in (3, 100, 300):  # the speed test is part of the graph: few points take the data pass, as eager does
        for got, want in zip(program.module()(x[:n], y[:n]), Fit()(x[:n], y[:n]), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_auto_never_builds_a_huge_gram_matrix_for_a_data_pass():
    """degree 100,000 on 10 points: the data pass is faster, and auto must not allocate the (D+1)^2 matrix first."""
    x = torch.linspace(0, 1, 10, dtype=torch.float64)
    auto = pykernels.fit_poly(x, x, 100_000, lr=0.01, steps=2)
    data = pykernels.fit_poly(x, x, 100_000, lr=0.01, steps=2, method="data")
    assert torch.equal(auto.coeffs, data.coeffs)


def test_choose_fit_method_names_a_bad_dtype():
    moments = pykernels.poly_moments(torch.linspace(0, 1, 10), torch.ones(10), 2)
    with pytest.raises(TypeError, match=r"^dtype must be torch.float32 or torch.float64 \(the data's dtype\)"):
        pykernels.choose_fit_method(moments, lr=0.1, steps=10_000, dtype=torch.float16)


def test_auto_compiles_with_dynamic_shapes_and_under_vmap():
    """dynamic=True makes even module-level floats symbolic (torch.cond's operands take none); a two-output
    torch.cond fails under vmap: auto's graph holds its constants as values and packs its outputs in one tensor."""
    x = torch.linspace(0, 1, 300, dtype=torch.float64)
    ys = torch.sin(torch.arange(1, 5, dtype=torch.float64)[:, None] * x)

    def fit(x, y):
        return tuple(pykernels.fit_poly(x, y, 4, lr=0.5, steps=100, record_every=7))

    torch._dynamo.reset()
    for got, want in zip(torch.compile(fit, fullgraph=True, dynamic=True)(x, ys[0]), fit(x, ys[0]), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch._dynamo.reset()
    mapped = torch.compile(torch.func.vmap(lambda y: fit(x, y)))(ys)
    expected = reference.fit_poly_torch(x, ys, torch.zeros(5, dtype=torch.float64), 0.5, 100, 7)
    for got, want in zip(mapped, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=0)


@pytest.mark.parametrize("batch", [None, 3])
def test_a_recorded_loss_overflows_as_the_reference_computes_it(batch):
    """c.u - 2 c.b + s at coefficients near 1e154: products and 2 c.b are rounded on their own, as the reference
    rounds them (a fused 2 c.b could not overflow: -inf where the reference says NaN)."""
    y = torch.full((batch, 4) if batch else (4,), 1e154, dtype=torch.float64)
    moments = reference.poly_moments_torch(torch.arange(4.0, dtype=torch.float64), y, 0)
    init = torch.full((1,), 1e154, dtype=torch.float64)
    got = torch.ops.pykernels.fit_poly_moments(*moments, init, 0.01, 3, 1)
    want = reference.fit_poly_moments_torch(*moments, init, 0.01, 3, 1)
    torch.testing.assert_close(got[1], want[1], equal_nan=True, rtol=1e-12, atol=0)


# --- auto is deterministic and total (issue 25) ----------------------------------------------------------------------

_AUTO_X = torch.linspace(-1, 1, 200, dtype=torch.float64)


def _auto_fit(x, y):
    return tuple(pykernels.fit_poly(x, y, 3, lr=0.225, steps=20_000, record_every=1000))


def _by_method(x, y, method):
    return pykernels.fit_poly(x, y, 3, lr=0.225, steps=20_000, record_every=1000, method=method)


def test_a_nan_bound_is_defined_the_same_in_numpy_and_torch():
    """M = 0 (every term of the quadratic form zero: a zero series from zero coefficients): the loss 0 is exact,
    bound 0, where 0/0 gave NaN; a loss of 0 from terms that are not zero is unresolved (inf); a NaN bound (NaN
    sums) is never within the tolerance, in both forms."""
    diagonal = np.ones((3, 2))
    offset = np.array([0.0, 1.0, np.nan])
    coeffs, loss = np.zeros((3, 2)), np.zeros(3)
    for xp, convert in ((np, np.asarray), (torch, torch.from_numpy)):
        bound = pykernels._auto.loss_bound(*(convert(a) for a in (diagonal, offset, coeffs, loss)))
        assert bound[0] == 0 and bound[1] == math.inf and math.isnan(bound[2])
        assert [bool(v) for v in pykernels._auto.within(bound, 1e-10)] == [True, False, False], xp


@pytest.mark.parametrize("route", ROUTES)
def test_a_zero_series_keeps_the_batch_on_the_statistics(route):
    """A padding series (y = 0) made the eager batch take the data pass (its loss bound 0/0) and the compiled one
    keep the statistics: now both keep them, with the same values."""
    ys = torch.stack([torch.cos(k * _AUTO_X) for k in range(1, 6)] + [torch.zeros_like(_AUTO_X)])
    gram = _by_method(_AUTO_X, ys, "gram")
    for got, want in zip(routed(route, _auto_fit)(_AUTO_X, ys), gram, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("route", ROUTES)
def test_auto_decides_per_series(route):
    """One nearly exact series (its loss below what the quadratic form resolves) takes the data pass; the others
    keep the statistics' fit, and every route returns the same values."""
    ys = torch.stack([torch.cos(k * _AUTO_X) for k in range(1, 6)])
    ys[2] = 0.5 - _AUTO_X + 2 * _AUTO_X**3
    gram, data = _by_method(_AUTO_X, ys, "gram"), _by_method(_AUTO_X, ys, "data")
    assert not torch.equal(gram.coeffs[2], data.coeffs[2])
    kept = torch.tensor([True, True, False, True, True])[:, None]
    for got, statistics, pass_ in zip(routed(route, _auto_fit)(_AUTO_X, ys), gram, data, strict=True):
        torch.testing.assert_close(got, torch.where(kept, statistics, pass_), rtol=0, atol=0)


def _two(t):
    from torch.testing._internal.two_tensor import TwoTensor

    return TwoTensor(t, t.clone())


def _fake_fit(x, y):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        return _auto_fit(mode.from_tensor(x), mode.from_tensor(y))


@pytest.mark.parametrize(
    ("where", "run"),
    [
        ("meta", lambda x, y: _auto_fit(x.to("meta"), y.to("meta"))),
        ("fake_tensor_mode", _fake_fit),
        ("make_fx", lambda x, y: torch.fx.experimental.proxy_tensor.make_fx(_auto_fit)(x, y)(x, y)),
        ("subclass", lambda x, y: tuple(t.a for t in _auto_fit(_two(x), _two(y)))),
    ],
)
def test_auto_falls_back_to_the_data_pass_where_it_cannot_read_values(where, run):
    """As inside torch.func: the shapes of the data pass (fake, meta), its graph (make_fx) and its values."""
    ys = torch.stack([torch.cos(k * _AUTO_X) for k in range(1, 4)])
    data = _by_method(_AUTO_X, ys, "data")
    for got, want in zip(run(_AUTO_X, ys), data, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        if where in ("make_fx", "subclass"):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.slow
def test_auto_packages_with_aot_inductor(tmp_path):
    """aoti_compile_and_package of a module that uses fit_poly(method="auto"): advanced indexing inside
    torch.cond failed there ("Attempting to use FunctionalTensor on its own"); 1-4 minutes on 2 busy cores."""

    class Fit(torch.nn.Module):
        def forward(self, x, y):
            fit = pykernels.fit_poly(x, y, 3, lr=0.5, steps=100, record_every=10)
            return fit.coeffs, fit.trace

    x = torch.linspace(0, 1, 300, dtype=torch.float64)
    y = torch.stack([torch.sin(3 * x), torch.zeros_like(x)])
    path = torch._inductor.aoti_compile_and_package(
        torch.export.export(Fit(), (x, y)), package_path=str(tmp_path / "fit.pt2")
    )
    for got, want in zip(torch._inductor.aoti_load_package(path)(x, y), Fit()(x, y), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# --- auto costs what it chooses (issue 27): its checks come from the kernel and from O(D) work -----------------------

# (name, x, y, init, lr, steps, record_every): each fit's finiteness and last-loss bound as the kernel reports them
_CHECK_X = torch.linspace(0, 1, 50, dtype=torch.float64)
CHECKED_FITS = [
    ("converging", _CHECK_X, torch.sin(3 * _CHECK_X), 0.0, 0.5, 203, 1),
    ("record_every_5", _CHECK_X, torch.sin(3 * _CHECK_X), 0.0, 0.5, 203, 5),
    ("diverging_to_nan", _CHECK_X, torch.sin(3 * _CHECK_X), 0.0, 40.0, 400, 1),  # inf, then inf - inf
    ("float32_overflowing_trace", _CHECK_X, 1e20 * torch.sin(3 * _CHECK_X), 0.0, 0.5, 64, 1),  # float64 losses 1e40
    ("huge_start_converging", _CHECK_X, torch.sin(3 * _CHECK_X), 1e160, 0.5, 203, 1),  # loss inf at step 0 only
    ("nearly_exact", _CHECK_X, 1 + 2 * _CHECK_X, 0.0, 0.5, 4000, 1),  # the loss bound past the tolerance
    ("no_losses", _CHECK_X, torch.sin(3 * _CHECK_X), 0.0, 0.5, 0, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch", [None, 11])
@pytest.mark.parametrize(
    ("name", "x", "y", "start", "lr", "steps", "record_every"), CHECKED_FITS, ids=[c[0] for c in CHECKED_FITS]
)
def test_the_checked_fit_reports_what_a_pass_over_its_outputs_finds(
    dtype, batch, name, x, y, start, lr, steps, record_every
):
    """The kernel's per-series finiteness and last-loss bound equal torch.isfinite over the returned coefficients
    and trace and pykernels._auto.loss_bound of the returned last loss (bit for bit), and its fit is
    fit_poly_moments'. A batch mixes the case with well-behaved series (ones that diverge or converge, per lane)."""
    if batch:
        scales = torch.linspace(0.5, 1.5, batch, dtype=torch.float64)[:, None]
        y = torch.cat([y[None] * scales[:5], torch.sin(5 * x)[None] * scales[5:]])
    x, y = x.to(dtype), y.to(dtype)
    moments = pykernels.poly_moments(x, y, 3)
    start = min(start, torch.finfo(dtype).max / 1e8)  # float32: 3e30, still a loss past float32's range
    init = torch.full((*y.shape[:-1], 4), start, dtype=dtype)
    *fit, finite, bound = torch.ops.pykernels._fit_poly_moments_checked(*moments, init, lr, steps, record_every)
    plain = torch.ops.pykernels.fit_poly_moments(*moments, init, lr, steps, record_every)
    for got, want in zip(fit, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    coeffs, trace = fit
    torch.testing.assert_close(finite, torch.isfinite(coeffs).all(-1) & torch.isfinite(trace).all(-1))
    if steps == 0:
        assert (bound == 0).all()
    else:
        power_sums, _, square_sum = (t.numpy() for t in moments)
        diagonal = pykernels._auto.gram_diagonal(power_sums, 4)
        with np.errstate(all="ignore"):
            want = pykernels._auto.loss_bound(
                diagonal, square_sum / power_sums[..., 0], coeffs.double().numpy(), trace[..., -1].double().numpy()
            )
        np.testing.assert_array_equal(bound.numpy(), want)
    expected = {  # what each case is there for, so that a case that stops exercising it fails
        "diverging_to_nan": False,
        "float32_overflowing_trace": dtype == torch.float64,
        "huge_start_converging": False,
    }
    if name in expected:
        assert bool(finite.reshape(-1)[0]) is expected[name]
    if name == "nearly_exact":
        assert (bound.reshape(-1)[0] > pykernels.ops.GRAM_TOLERANCE[torch.float64]).item()


@pytest.mark.parametrize("degree", [1, 4, 8, 14])
@pytest.mark.parametrize(("low", "high"), [(-0.5, 0.5), (0, 5), (1, 2), (100, 101), (-1000, 1000)])
def test_the_iterate_bounds_ceiling_is_at_least_the_bound(degree, low, high):
    """iterate_bound_ceiling (O(D), from the moments) >= iterate_bound (A's eigenvalues) for every lr and T, so
    that auto's choice from the ceiling is the choice from the bound: where the ceiling is within the tolerance,
    the bound is. Per series of a batch and for one fit (Python floats) alike."""
    x = torch.linspace(low, high, 40, dtype=torch.float64)
    power_sums = pykernels.poly_moments(x, torch.sin(x), degree).power_sums.numpy()
    gram = pykernels._auto.gram_matrix(power_sums, degree + 1, np)
    lambda_max = float(np.linalg.eigvalsh(gram)[-1])
    for lr in (0.0, 1e-3 / lambda_max, 0.5 / lambda_max, 2.0 / lambda_max):
        for steps in (1, 1000, 10**6):
            with np.errstate(all="ignore"):
                bound = pykernels._auto.iterate_bound(gram, lr, steps, np)
            ceiling = pykernels._auto.iterate_bound_ceiling(power_sums, lr, steps)
            assert ceiling >= bound, (lr, steps)
            assert pykernels._auto.iterate_bound_ceiling(power_sums.tolist(), lr, steps) >= bound


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_auto_decides_from_the_ceiling_as_from_the_eigenvalues(dtype):
    """The per-series choice, on a grid of scales and step counts around the tolerance: the ceiling first, the
    eigenvalues for the series it leaves undecided, equals the choice from the eigenvalues alone."""
    tolerance = pykernels.ops.GRAM_TOLERANCE[dtype]
    x = torch.linspace(0, 1, 30, dtype=torch.float64)
    power_sums = torch.stack([pykernels.poly_moments(s * x, x, 4).power_sums for s in (0.1, 1, 3, 10, 30)])
    for lr in (1e-6, 1e-4, 1e-2):
        for steps in (10, 10**4, 10**5, 10**6, 10**7):
            got = pykernels.ops._accurate_iterates(power_sums, lr, steps, tolerance)
            want = pykernels._auto.within(pykernels.ops._iterate_bounds(power_sums.numpy(), lr, steps), tolerance)
            np.testing.assert_array_equal(got, want)
            for row, expected in zip(power_sums, want, strict=True):
                assert bool(pykernels.ops._accurate_iterates(row, lr, steps, tolerance)) == bool(expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch", [None, 13], ids=["single", "batch13"])
@pytest.mark.parametrize("record_every", [1, 7])
def test_the_jumps_are_the_stepwise_float64_recurrence(dtype, batch, record_every):
    """The seed fit's 16-step jumps and quadratic-form losses against the stepwise float64 recurrence on the same
    statistics (the reference): the iterates and every loss to 1e-11 relative (measured: 3e-12 for the smallest
    coefficient, 2e-13 for the losses; the 8-step jumps before were 5e-12 off) for float64 data; float32 data:
    the results rounded once. Batched fits that share x take the same jumps, SIMD across series (13: a group of 8
    and a partial one)."""
    x = torch.linspace(0, 5, 100, dtype=dtype)
    y = torch.sin(x) if batch is None else torch.sin(x) * torch.linspace(0.5, 1.5, batch, dtype=dtype)[:, None]
    moments = pykernels.poly_moments(x, y, 4)
    init = torch.zeros(*y.shape[:-1], 5, dtype=dtype)
    steps = 20_003  # 1,250 jumps and a 3-step tail
    got = torch.ops.pykernels.fit_poly_moments(*moments, init, 1e-5, steps, record_every)
    want = reference.fit_poly_moments_torch(*moments, init.double(), 1e-5, steps, record_every)
    rtol = 1e-11 if dtype == torch.float64 else 2**-24
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w.to(dtype).double(), rtol=rtol, atol=0)


@pytest.mark.parametrize("batch", [None, 9])
def test_tiny_coefficients_with_a_large_lr_are_not_jumped_over(batch):
    """|c| ~ 1e-165 and lr 10: the 16-step form's products c_a c_b underflow to 0, while Q_j (a large lr's P_j^T A P_j)
    would make their losses ~1e-300 a few steps on; the jumps must leave such blocks to the stepwise loop (found by
    review: the losses came out 0)."""
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    y = torch.zeros(*((batch,) if batch else ()), 20, dtype=torch.float64)
    moments = pykernels.poly_moments(x, y, 1)
    init = torch.tensor([1e-165, 0.0], dtype=torch.float64).expand(*y.shape[:-1], 2)
    got = torch.ops.pykernels.fit_poly_moments(*moments, init, 10.0, 40, 1)
    want = reference.fit_poly_moments_torch(*moments, init, 10.0, 40, 1)
    assert (want[1][..., 12:16] > 1e-301).all()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=0)


@pytest.mark.parametrize("steps", [48, 50, 64])
def test_the_last_recorded_loss_is_the_stepwise_form(steps):
    """The loss auto checks is the last recorded one, and its bound (pykernels._auto.loss_bound) is of the stepwise
    form c.u - 2 c.b + s: the jumps leave that step to the stepwise loop. At lr 0 every step's loss is the same
    number, and on a nearly exact fit its terms cancel to ~1e-16 of themselves: the last one is the stepwise form
    in Python floats bit for bit (products rounded, summed left to right), while the jumps' form (Q_j, r_j, k_j)
    rounds otherwise."""
    x = torch.linspace(0, 1, 30, dtype=torch.float64)
    moments = pykernels.poly_moments(x, 1 + 2 * x - 3 * x**2, 2)
    init = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64) * (1 + 1e-9)
    _, trace = torch.ops.pykernels.fit_poly_moments(*moments, init, 0.0, steps, 1)
    count = moments.power_sums[0].item()
    gram = [[moments.power_sums[j + k].item() / count for k in range(3)] for j in range(3)]
    target = [v / count for v in moments.cross_sums.tolist()]
    c = init.tolist()
    u = [sum_left_to_right(gram[j][k] * c[k] for k in range(3)) for j in range(3)]
    quadratic = sum_left_to_right(c[j] * u[j] for j in range(3))
    linear = sum_left_to_right(c[j] * target[j] for j in range(3))
    stepwise = quadratic - 2.0 * linear + moments.square_sum.item() / count
    assert trace[-1].item() == stepwise
    assert len(set(trace.tolist())) > 1  # the jumps' losses round otherwise (else the case shows nothing)


def sum_left_to_right(terms) -> float:
    total = 0.0
    for term in terms:
        total += term
    return total


@pytest.fixture(scope="module")
def long_seed_fit():
    """The seed fit's statistics and the stepwise float64 reference over 70,003 steps (4,375 jumps: a single fit
    that long runs in two halves), every loss recorded."""
    x = torch.linspace(0, 5, 100, dtype=torch.float64)
    moments = pykernels.poly_moments(x, torch.sin(x), 4)
    init = torch.zeros(5, dtype=torch.float64)
    return moments, init, reference.fit_poly_moments_torch(*moments, init, 1e-5, 70_003, 1)


@pytest.mark.parametrize("record_every", [1, 7, 10**9])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_long_single_fit_in_two_halves_is_the_stepwise_recurrence(long_seed_fit, record_every, threads):
    """The second half starts where (P_16, q_16)^2187 takes the first (repeated squaring, not the chain): the
    iterates and losses still match the stepwise reference to 1e-11 (measured 2.5e-12 at the midpoint, as the
    chain of jumps), and the result is the same bit for bit on one thread and on two."""
    moments, init, (want_coeffs, want_trace) = long_seed_fit
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = torch.ops.pykernels.fit_poly_moments(*moments, init, 1e-5, 70_003, record_every)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(got[0], want_coeffs, rtol=1e-11, atol=0)
    torch.testing.assert_close(got[1], want_trace[::record_every], rtol=1e-11, atol=0)
    other = torch.ops.pykernels.fit_poly_moments(*moments, init, 1e-5, 70_003, record_every)
    assert all(torch.equal(a, b) for a, b in zip(got, other, strict=True))


@pytest.mark.parametrize("overflow_at", [20_000, 50_000])
def test_a_long_single_fit_that_diverges_in_either_half_is_the_stepwise_recurrence(overflow_at):
    """lr just past stability: the iterates grow |1 - 2 lr lambda_max| per step and overflow near step
    `overflow_at` of 70,000, in the first half or the second. The half that fails hands the fit to the chain (and
    its stepwise loop): inf and NaN where the reference has them, the same values before."""
    x = torch.linspace(-1, 1, 40, dtype=torch.float64)
    moments = reference.poly_moments_torch(x, torch.sin(3 * x), 3)
    largest = np.linalg.eigvalsh(reference.gram_system_torch(*moments)[0].numpy())[-1]
    growth = math.exp(math.log(1e300) / overflow_at)  # |1 - 2 lr lambda_max| per step
    lr = (1 + growth) / (2 * largest)
    init = torch.full((4,), 1e-3, dtype=torch.float64)
    got = torch.ops.pykernels.fit_poly_moments(*moments, init, lr, 70_000, 97)
    want = reference.fit_poly_moments_torch(*moments, init, lr, 70_000, 97)
    assert not torch.isfinite(want[1]).all() and torch.isfinite(want[1][: overflow_at // 200]).all()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, equal_nan=True, rtol=1e-9, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("record_every", [1, 5, 16, 10**9])
@pytest.mark.parametrize("steps", [15, 16, 203, 4099])
def test_a_batch_that_shares_x_is_its_fits_one_at_a_time(dtype, record_every, steps):
    """Each series of a batched fit on one x (jumps SIMD across series, 8 to a group; 19 series: two groups and a
    partial one) against the same fit alone (jumps one series at a time): the same maps and tables, the same order
    of every sum, equal bit for bit here. The last steps (fewer than 16) step, the batch's with fused multiply-adds,
    so their losses differ by rounding: a few ulps of the loss's terms (~1e2 here; measured 1.4e-14, asserted
    1e-13)."""
    x = torch.linspace(-1, 1, 60, dtype=dtype)
    scales = torch.linspace(-2, 3, 19, dtype=torch.float64)[:, None]
    y = (torch.sin(3 * x.double()) * scales + scales**2).to(dtype)
    moments = pykernels.poly_moments(x, y, 3)
    init = (torch.arange(19 * 4, dtype=torch.float64).reshape(19, 4) / 40).to(dtype)
    batched = torch.ops.pykernels.fit_poly_moments(*moments, init, 0.1, steps, record_every)
    for series in range(19):
        alone = (moments.power_sums, moments.cross_sums[series], moments.square_sum[series], init[series])
        single = torch.ops.pykernels.fit_poly_moments(*alone, 0.1, steps, record_every)
        for b, s in zip(batched, single, strict=True):
            torch.testing.assert_close(b[series], s, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("batch", [None, 1, 9])
def test_the_first_product_of_each_sum_is_rounded_as_the_reference_rounds_it(backend, batch):
    """c.b = c0 b0 + c1 b1 with c0 b0 = +inf and c1 b1 = -inf is NaN in the reference; the batched exact loop had
    fused c0 b0 into the next add (an FMA: -inf, then a loss of inf). Every series, every backend: the reference's
    special values."""
    power_sums = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)  # A = I
    cross_sums = torch.tensor([1e154, -1e154], dtype=torch.float64)
    square_sum = torch.tensor(1.0, dtype=torch.float64)
    init = torch.full((2,), 1e200, dtype=torch.float64)
    if batch:
        cross_sums, square_sum, init = (t.expand(batch, *t.shape).contiguous() for t in (cross_sums, square_sum, init))
    moments = pykernels.PolyMoments(power_sums, cross_sums, square_sum)
    for lr in (0.0, 0.1):
        got = pykernels.fit_poly_moments(moments, lr=lr, steps=3, init=init, backend=backend)
        want = reference.fit_poly_moments_torch(*moments, init, lr, 3, 1)
        assert torch.isnan(want[1]).any()  # the case makes NaN (in the trace)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, equal_nan=True, rtol=1e-12, atol=0)
