"""pykernels' public functions: thin, typed wrappers that check their Python arguments, pick the backend and call
its op.

``p(x) = c_0 + c_1 x + ... + c_D x^D`` with ``coeffs = (c_0, ..., c_D)``. ``poly``, ``poly_mse`` and ``dot`` have
exact derivatives of every order (hand-written, csrc/autograd.cpp) through every autograd route, torch.func and
forward mode included; ``fit_poly``, ``linear_sgd_*`` and ``philox_normal`` are not differentiable and raise if
differentiated. Everything works under ``torch.compile`` and ``torch.export``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch.fx.experimental.symbolic_shapes import guard_scalar

from . import _auto, _checks, reference
from ._backends import get_backend


class PolyMSEResult(NamedTuple):
    loss: torch.Tensor
    """mean((p(x) - y)^2), 0-d, differentiable."""
    grad_coeffs: torch.Tensor
    """d loss / d coeffs = 2/N sum (p(x) - y) x^k, already computed; differentiable too (its derivative is the
    Hessian of the loss)."""


def poly(x: torch.Tensor, coeffs: torch.Tensor, *, backend: str = "cpp") -> torch.Tensor:
    """Evaluate ``y = p(x) = sum_k coeffs[k] x^k`` elementwise by Horner's rule.

    Args:
        x: any shape, float32 or float64 (CUDA also float16/bfloat16).
        coeffs: ``(D+1,)``, same dtype and device as ``x``.
        backend: ``"cpp"`` (default), ``"numba"`` or ``"torch"`` (the plain-torch reference).

    Returns:
        ``y`` with the shape of ``x`` (empty for an empty ``x``, as torch's elementwise ops).
    """
    x, coeffs, ops = _checks.tensor(x, "x"), _checks.tensor(coeffs, "coeffs"), get_backend(backend)
    if x.numel() == 0:  # the kernels take non-empty x: nothing to evaluate, the definition gives the empty result
        _checks.check_poly_inputs(x, coeffs, allow_reduced=x.device.type == "cuda", allow_empty=True)
        return reference.poly_torch(x, coeffs)
    return ops.poly(x, coeffs)


def poly_mse(x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor, *, backend: str = "cpp") -> PolyMSEResult:
    """Mean squared error of the polynomial fit and its coefficient gradient, in one pass over the data.

    With ``r = p(x) - y`` and ``N = x.numel()``::

        loss           = 1/N sum r^2
        grad_coeffs[k] = 2/N sum r x^k

    ``loss.backward()`` reuses ``grad_coeffs`` (it costs almost nothing); gradients for ``x`` and ``y`` are
    derived only when they require grad. A manual gradient-descent step needs no autograd at all::

        loss, grad = pykernels.poly_mse(x, y, w)
        w -= lr * grad
    """
    ops = get_backend(backend)
    return PolyMSEResult(
        *ops.poly_mse(_checks.tensor(x, "x"), _checks.tensor(y, "y"), _checks.tensor(coeffs, "coeffs"))
    )


def dot(a: torch.Tensor, b: torch.Tensor, *, backend: str = "cpp") -> torch.Tensor:
    """``sum_i a_i b_i`` of two 1-D tensors of equal length, accumulated in float64 (correctly rounded to the
    input dtype for all but adversarial inputs) and returned as a 0-d tensor of the input dtype."""
    return get_backend(backend).dot(_checks.tensor(a, "a"), _checks.tensor(b, "b"))


class FitResult(NamedTuple):
    coeffs: torch.Tensor
    """the fitted coefficients, (D+1,) or (B, D+1)"""
    trace: torch.Tensor
    """the loss before every ``record_every``-th step, (T,) or (B, T) with T = ceil(steps / record_every)"""


# Named tuples pass through torch.export as they are, but its serializer needs a stable name for them.
for _result in (PolyMSEResult, FitResult):
    pytree._register_namedtuple(_result, serialized_type_name=f"pykernels.{_result.__name__}")


class PolyMoments(NamedTuple):
    """The sufficient statistics of a least-squares polynomial fit of degree D, summed in float64 (sums over
    disjoint data add: all-reduce them to fit data split across processes)."""

    power_sums: torch.Tensor
    """``sum_i x_i^p`` for p = 0..2D, (2D+1,) or (B, 2D+1); ``power_sums[..., 0]`` is N."""
    cross_sums: torch.Tensor
    """``sum_i y_i x_i^k`` for k = 0..D, (D+1,) or (B, D+1)."""
    square_sum: torch.Tensor
    """``sum_i y_i^2``, () or (B,)."""


for _result in (PolyMoments,):
    pytree._register_namedtuple(_result, serialized_type_name=f"pykernels.{_result.__name__}")

FIT_METHODS = ("auto", "gram", "data")


def poly_moments(x: torch.Tensor, y: torch.Tensor, degree: int, *, backend: str = "cpp") -> PolyMoments:
    """The sufficient statistics of fitting ``p(x)`` of the given degree to y by least squares, one pass over the
    data, every sum in float64: with ``V[i, k] = x_i^k`` the N x (D+1) power matrix, ``A = V^T V / N`` is the Hankel
    matrix ``A[j, k] = power_sums[j + k] / N``, ``b = V^T y / N = cross_sums / N`` and ``y^T y / N = square_sum / N``;
    then ``mean((p(x) - y)^2) = c^T A c - 2 c^T b + y^T y / N`` for any coefficients c.

    x, y as for :func:`fit_poly`: y (N,) or (B, N), x (N,) shared or like y. Not differentiable.
    """
    x, y = _checks.tensor(x, "x"), _checks.tensor(y, "y")
    degree = _checks.integer(degree, "degree", maximum=_checks.MAX_MOMENTS_DEGREE)
    return PolyMoments(*get_backend(backend).poly_moments(x, y, degree))


def fit_poly_moments(
    moments: PolyMoments,
    *,
    lr: float,
    steps: int,
    record_every: int = 1,
    init: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    backend: str = "cpp",
) -> FitResult:
    """``steps`` steps of gradient descent on the mean squared error, from the sufficient statistics alone
    (:func:`poly_moments`), iterated in float64::

        u = A c;  loss = c^T u - 2 c^T b + s;  c -= 2 lr (u - b)

    the data pass's iterates in exact arithmetic, at (D+1)^2 work per step whatever N is. The degree is
    ``moments.cross_sums.shape[-1] - 1``; batched when the moments are (B fits sharing x: power_sums (2D+1,)).

    Args:
        moments: from :func:`poly_moments`, or their sum over shards of the data.
        init: initial coefficients (D+1,) or (B, D+1); zeros by default. Its dtype is the results' dtype.
        dtype: the results' dtype when ``init`` is None (float64 by default).
    """
    power_sums, cross_sums, square_sum = _moments_arg(moments)
    init = _checks.optional_tensor(init, "init")
    lr = _checks.real(lr, "lr", minimum=0.0)
    steps = _checks.integer(steps, "steps")
    record_every = _checks.integer(record_every, "record_every", minimum=1)
    if init is None:
        if dtype not in (None, torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32, torch.float64 or None, got {dtype}")
        init = torch.zeros(cross_sums.shape, dtype=dtype or torch.float64, device=cross_sums.device)
    elif dtype is not None:
        raise ValueError("give dtype or init, not both (the results take init's dtype)")
    elif cross_sums.dim() in (1, 2):  # otherwise the kernel names cross_sums
        _checks.check_init(init, cross_sums, cross_sums.shape[-1], "cross_sums")
    return FitResult(
        *get_backend(backend).fit_poly_moments(power_sums, cross_sums, square_sum, init, lr, steps, record_every)
    )


GRAM_TOLERANCE = _auto.GRAM_TOLERANCE


def _numpy_moments(moments: PolyMoments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(t.detach().cpu().numpy() for t in moments)


def _moments_arg(moments: object) -> PolyMoments:
    """moments as a PolyMoments of three dense tensors, or a TypeError naming what was given."""
    if not isinstance(moments, tuple) or len(moments) != 3:
        raise TypeError(
            f"moments must be a PolyMoments (power_sums, cross_sums, square_sum), got {type(moments).__name__}"
        )
    return PolyMoments(*(_checks.tensor(t, name) for t, name in zip(moments, PolyMoments._fields, strict=True)))


def _iterate_bounds(power_sums: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """Per series, ``pykernels._auto.iterate_bound`` of the NumPy moments."""
    with np.errstate(all="ignore"):  # sums that are not finite give an A that is not: the bound says inf
        gram = _auto.gram_matrix(power_sums, (power_sums.shape[-1] + 1) // 2, np)
        return _auto.iterate_bound(gram, lr, steps, np)


def _accurate_iterates(power_sums: torch.Tensor, lr: float, steps: int, tolerance: float) -> np.ndarray:
    """Per series, whether ``pykernels._auto.iterate_bound`` is within the tolerance: first by its O(D) ceiling
    (``iterate_bound_ceiling``), then from A's eigenvalues for the series the ceiling leaves undecided."""
    if power_sums.dim() == 1:  # one fit (or x shared by a batch): Python floats, a few microseconds
        if _auto.within(_auto.iterate_bound_ceiling(power_sums.tolist(), lr, steps), tolerance):
            return np.True_
        return np.asarray(_auto.within(_iterate_bounds(power_sums.cpu().numpy(), lr, steps), tolerance))
    power_sums = power_sums.cpu().numpy()
    with np.errstate(all="ignore"):
        accurate = np.asarray(_auto.within(_auto.iterate_bound_ceiling(power_sums, lr, steps), tolerance))
    undecided = ~accurate
    if not undecided.any():
        return accurate
    accurate[undecided] = _auto.within(_iterate_bounds(power_sums[undecided], lr, steps), tolerance)
    return accurate


def gram_error_bound(moments: PolyMoments, *, lr: float, steps: int) -> float:
    """A bound on the relative error of ``steps`` steps of gradient descent on these statistics (float64 sums and
    iterates), the largest over a batch; inf where they are not finite. See ``pykernels._auto.iterate_bound``."""
    return float(_iterate_bounds(_numpy_moments(moments)[0], lr, steps).max())


def _loss_bounds(
    power_sums: np.ndarray, square_sum: np.ndarray, coeffs: torch.Tensor, loss: torch.Tensor
) -> np.ndarray:
    """Per series, ``pykernels._auto.loss_bound`` of the NumPy moments."""
    wide_coeffs, wide_loss = (t.detach().cpu().double().numpy() for t in (coeffs, loss))
    with np.errstate(all="ignore"):
        diagonal = _auto.gram_diagonal(power_sums, wide_coeffs.shape[-1])
        return _auto.loss_bound(diagonal, square_sum / power_sums[..., 0], wide_coeffs, wide_loss)


def gram_loss_error_bound(moments: PolyMoments, coeffs: torch.Tensor, loss: torch.Tensor) -> float:
    """A bound on the relative error of losses computed from these statistics at ``coeffs`` where the loss is
    ``loss`` (the largest over a batch). See ``pykernels._auto.loss_bound``."""
    power_sums, _, square_sum = _numpy_moments(moments)
    return float(_loss_bounds(power_sums, square_sum, coeffs, loss).max())


def choose_fit_method(moments: PolyMoments, *, lr: float, steps: int, dtype: torch.dtype) -> str:
    """``"gram"`` or ``"data"``: the method ``fit_poly(method="auto")`` takes for all the series of these moments.

    ``"gram"`` where it is faster (``pykernels._auto.gram_is_faster``) and its iterates accurate:
    :func:`gram_error_bound` at most ``GRAM_TOLERANCE[dtype]`` (2^-24 for float32 data, 1e-10 for float64) for every
    series. fit_poly decides per series (a series past the tolerance takes the data pass, the others stay on the
    statistics), then also checks each last loss (:func:`gram_loss_error_bound`)."""
    moments = _moments_arg(moments)
    lr = _checks.real(lr, "lr", minimum=0.0)
    steps = _checks.integer(steps, "steps")
    if dtype not in GRAM_TOLERANCE:
        raise TypeError(f"dtype must be torch.float32 or torch.float64 (the data's dtype), got {dtype}")
    if not _auto.gram_is_faster(int(moments[0][..., 0].min()), moments[1].shape[-1] - 1, steps):
        return "data"
    accurate = _accurate_iterates(moments.power_sums, lr, steps, GRAM_TOLERANCE[dtype])
    return "gram" if accurate.all() else "data"


@functools.cache
def _compiled_fit_ops() -> tuple[torch._ops.OpOverload, torch._ops.OpOverload]:
    """The compiled fit on the statistics and its checked form (looked up once: a lookup through torch.ops costs
    about a microsecond, a tenth of what auto may add to a fit)."""
    return torch.ops.pykernels.fit_poly_moments.default, torch.ops.pykernels._fit_poly_moments_checked.default


def _statistics_fit(
    ops, moments: PolyMoments, init: torch.Tensor, lr: float, steps: int, record_every: int
) -> tuple[FitResult, np.ndarray, np.ndarray]:
    """The fit on the statistics and, per series, whether its coefficients and every recorded loss are finite, and
    ``pykernels._auto.loss_bound`` of its last loss (0 without one): from the compiled CPU kernel as it writes
    them (no pass over the trace), elsewhere computed after."""
    plain, checked = _compiled_fit_ops()
    if ops.fit_poly_moments is plain and init.is_cpu:
        coeffs, trace, finite, bound = checked(*moments, init, lr, steps, record_every)
        if finite.dim() == 0:  # one fit: Python values (0-d NumPy arrays cost a microsecond more, on every fit)
            return FitResult(coeffs, trace), np.bool_(finite.item()), np.float64(bound.item())
        return FitResult(coeffs, trace), finite.numpy(), bound.detach().numpy()
    fit = FitResult(*ops.fit_poly_moments(*moments, init, lr, steps, record_every))
    finite = (torch.isfinite(fit.coeffs).all(-1) & torch.isfinite(fit.trace).all(-1)).cpu().numpy()
    if fit.trace.shape[-1] == 0:
        return fit, finite, np.zeros(finite.shape)
    power_sums, _, square_sum = _numpy_moments(moments)
    return fit, finite, _loss_bounds(power_sums, square_sum, fit.coeffs, fit.trace[..., -1])


def _values_unreadable(*tensors: torch.Tensor) -> bool:
    """Whether auto's choice cannot read the tensors' values: inside torch.func transforms (vmap, grad), on the
    meta device, for fake tensors and tensor subclasses with their own dispatch (the Python dispatch key), or
    while make_fx or a FakeTensorMode traces."""
    # plain loops and calls, no generators: this runs on every eager auto fit (a microsecond saved is ~1% of the seed
    # fit on the statistics)
    mode, modes = torch._C._get_dispatch_mode, torch._C._TorchDispatchModeKey
    if mode(modes.FAKE) is not None or mode(modes.PROXY) is not None:
        return True
    python, keys, wrapped = (
        torch._C.DispatchKey.Python,
        torch._C._dispatch_keys,
        torch._C._functorch.is_functorch_wrapped_tensor,
    )
    for t in tensors:
        if t.is_meta or wrapped(t) or keys(t).has(python):
            return True
    return False


def _auto_fit(ops, x, y, init, degree: int, lr: float, steps: int, record_every: int) -> FitResult:
    """fit_poly(method="auto"), eagerly: the statistics where they are faster, then per series the data pass where
    their iterates' or their last loss's bound exceeds the tolerance (or they are not finite). A series that fails
    takes the data pass alone: the others keep their statistics' fit (the data pass is per series, so its values
    are those of a whole-batch pass, as the traced form computes them)."""
    if not _auto.gram_is_faster(y.shape[-1], degree, steps):
        return FitResult(*ops.fit_poly(x, y, init, lr, steps, record_every))  # before anything of size (D+1)^2
    tolerance = GRAM_TOLERANCE[x.dtype]
    moments = PolyMoments(*ops.poly_moments(x, y, degree))
    accurate = _accurate_iterates(moments.power_sums, lr, steps, tolerance)
    if not accurate.any():
        return FitResult(*ops.fit_poly(x, y, init, lr, steps, record_every))
    fit, finite, last_loss_bound = _statistics_fit(ops, moments, init, lr, steps, record_every)
    if y.dim() == 1:  # one fit: Python bools (NumPy's 0-d operations cost microseconds here)
        if accurate and finite and _auto.within(float(last_loss_bound), tolerance):
            return fit
        return FitResult(*ops.fit_poly(x, y, init, lr, steps, record_every))
    kept = accurate & finite & _auto.within(last_loss_bound, tolerance)
    # not kept: the statistics overflowed (y^2 beyond float64), or the fit is so close to exact that the quadratic
    # form cannot resolve its loss: the data pass's values (for float32 data, a float32 sum of squares may overflow
    # where the kept float64 statistics do not: auto then returns the finite MSE)
    if kept.all():
        return fit
    if not kept.any():
        return FitResult(*ops.fit_poly(x, y, init, lr, steps, record_every))
    redo = torch.from_numpy(np.flatnonzero(~kept)).to(y.device)
    part = ops.fit_poly(
        x[redo] if x.dim() == 2 else x, y[redo], init[redo] if init.dim() == 2 else init, lr, steps, record_every
    )
    return FitResult(fit.coeffs.index_copy(0, redo, part[0]), fit.trace.index_copy(0, redo, part[1]))


def _auto_fit_traced(ops, x, y, init, degree: int, lr: float, steps: int, record_every: int) -> FitResult:
    """fit_poly(method="auto") under torch.compile and torch.export: the same choices as eager, per series, as
    torch.cond's of the graph (one graph, no break on the data-dependent choice; the speed test stays symbolic in a
    dynamic N). Where some series fail, the data pass runs on all of them and each failing series takes its values
    (a cond's branches cannot change shape). Each cond returns one tensor, the coefficients and the trace side by
    side (a two-output cond fails under vmap)."""
    # torch.cond's branches take no symbolic float; with dynamic=True even these constants would be one
    lr, eps = guard_scalar(lr), guard_scalar(_auto.EPS64)
    tolerance = guard_scalar(GRAM_TOLERANCE[x.dtype])
    terms = degree + 1

    def packed(coeffs, trace):
        return torch.cat([coeffs.expand(*trace.shape[:-1], terms), trace], dim=-1)

    def on_data(x, y, init, *_):
        return packed(*ops.fit_poly(x, y, init, lr, steps, record_every))

    def on_statistics(x, y, init, accurate, power_sums, cross_sums, square_sum):
        coeffs, trace = ops.fit_poly_moments(power_sums, cross_sums, square_sum, init, lr, steps, record_every)
        kept = accurate & torch.isfinite(coeffs).all(-1) & torch.isfinite(trace).all(-1)
        if trace.shape[-1] > 0:
            diagonal = _auto.gram_diagonal(power_sums, terms)
            offset = square_sum / power_sums[..., 0]
            bound = _auto.loss_bound(diagonal, offset, coeffs.double(), trace[..., -1].double(), eps)
            kept = kept & _auto.within(bound, tolerance)
        result = packed(coeffs, trace)

        def mixed(result, kept, x, y, init):
            return torch.where(kept[..., None], result, on_data(x, y, init))

        return torch.cond(kept.all(), lambda result, *_: result.clone(), mixed, (result, kept, x, y, init))

    def on_faster(x, y, init):
        moments = ops.poly_moments(x, y, degree)
        gram = _auto.gram_system(*moments, torch)[0]
        accurate = _auto.within(_auto.iterate_bound(gram, lr, steps, torch, eps), tolerance)
        return torch.cond(accurate.any(), on_statistics, on_data, (x, y, init, accurate, *moments))

    faster = _auto.gram_is_faster(y.shape[-1], degree, steps)
    if isinstance(faster, torch.SymBool):  # a dynamic N: the speed test stays in the graph
        result = torch.cond(faster, on_faster, on_data, (x, y, init))
    else:
        result = (on_faster if faster else on_data)(x, y, init)
    return FitResult(result[..., :terms].contiguous(), result[..., terms:].contiguous())


def fit_poly(
    x: torch.Tensor,
    y: torch.Tensor,
    degree: int,
    *,
    lr: float,
    steps: int,
    record_every: int = 1,
    init: torch.Tensor | None = None,
    method: str = "auto",
    backend: str = "cpp",
) -> FitResult:
    """Fit ``p(x) = sum_k c_k x^k`` of the given degree to y by ``steps`` steps of gradient descent on the mean
    squared error, the whole loop in one compiled call::

        r = p(x) - y;  loss = mean(r^2);  c_k -= lr * 2/N sum r x^k

    Batched: y of shape (B, N) runs B independent fits (x (N,) shared, or (B, N)), in parallel.

    Args:
        x, y: the data, float32 or float64.
        degree: D, the polynomial degree.
        lr, steps: learning rate and number of steps.
        record_every: record the loss before every ``record_every``-th step (1: every step, as the write-up).
        init: initial coefficients, (D+1,) or (B, D+1); zeros by default.
        method: ``"data"`` steps on the data (a pass over the N points per step, in the data's dtype);
            ``"gram"`` makes one pass for the sufficient statistics (:func:`poly_moments`, float64) and steps on
            them (:func:`fit_poly_moments`: (D+1)^2 work per step, float64, the loss from the quadratic form);
            ``"auto"`` (default) takes ``"gram"`` where it is faster and accurate (:func:`choose_fit_method`), and
            the data pass, per series, where a series' bound exceeds the tolerance or its loss turns out too small
            for the quadratic form to resolve; the whole data pass where the choice cannot read the data (inside
            torch.func transforms: vmap, grad; fake or meta tensors, make_fx, tensor subclasses). The same choice
            eagerly, under torch.compile and torch.export, and in AOTInductor packages.
            The same iterates in exact arithmetic; results in the data's dtype either way.
        backend: ``"cpp"`` (default), ``"numba"`` or ``"torch"`` (the reference loops).

    Not differentiable: with ``init`` (or the data) requiring grad, backpropagating through the result raises.
    """
    x, y, init = _checks.tensor(x, "x"), _checks.tensor(y, "y"), _checks.optional_tensor(init, "init")
    degree = _checks.integer(degree, "degree", maximum=_checks.MAX_MOMENTS_DEGREE)
    lr = _checks.real(lr, "lr", minimum=0.0)
    steps = _checks.integer(steps, "steps")
    record_every = _checks.integer(record_every, "record_every", minimum=1)
    if method not in FIT_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, FIT_METHODS))}, got {method!r}")
    ops = get_backend(backend)
    batch = (y.shape[0],) if y.dim() == 2 else ()
    if init is None:
        init = torch.zeros((*batch, degree + 1), dtype=y.dtype, device=y.device)
    else:  # the data first (as the kernels check it), so that a bad init is named as init, not as the kernel's coeffs
        _checks.check_fit_data(x, y)
        _checks.check_init(init, y, degree + 1, "y")
    if method == "data" or (method == "auto" and not torch.compiler.is_compiling() and _values_unreadable(x, y, init)):
        # where the values auto's choice reads are not there (torch.func transforms, fake or meta tensors, make_fx,
        # subclasses): the data pass
        return FitResult(*ops.fit_poly(x, y, init, lr, steps, record_every))
    _checks.check_fit_poly_inputs(x, y, init, lr, steps, record_every)  # before the moments' pass over the data
    if method == "gram":
        moments = ops.poly_moments(x, y, degree)
        return FitResult(*ops.fit_poly_moments(*moments, init, lr, steps, record_every))
    if torch.compiler.is_compiling():
        return _auto_fit_traced(ops, x, y, init, degree, lr, steps, record_every)
    return _auto_fit(ops, x, y, init, degree, lr, steps, record_every)


def linear_sgd_step(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
    """One fused SGD step of the write-up's large problem, in place, without autograd::

        e = dot(w, x) + b - y;  w -= lr * 2 e x;  b -= lr * 2 e

    two passes over x and w (no gradient vector is materialized). w: (N,) and b: (1,) or 0-d are updated in place;
    y is the sample's 0-d target. Returns the squared error e^2 before the step (compiled CPU kernel).

    Follows torch's in-place rules: w and b's version counters move, a leaf that requires grad is refused outside
    ``torch.no_grad()``, and w, b must not share memory with each other or with x, y."""
    return torch.ops.pykernels.linear_sgd_step.default(
        _checks.tensor(w, "w"),
        _checks.tensor(b, "b"),
        _checks.tensor(x, "x"),
        _checks.tensor(y, "y"),
        _checks.real(lr, "lr", minimum=0.0),
    )


def philox_normal(
    n: int,
    *,
    seed: int,
    stream: int = 0,
    out: torch.Tensor | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``n`` standard-normal float32 samples, element ``i`` a pure function of ``(seed, stream, i)``: Philox4x32-10
    (the counter-based generator of cuRAND) and Box-Muller, as defined in ``csrc/common/philox.h``. The same
    numbers for every thread count; :func:`linear_sgd_philox` regenerates exactly these inside its kernel.

    ``seed``: any 64-bit key, in [0, 2^64); ``stream``: in [0, 2^63).
    ``out``: a float32 1-D tensor of length ``n`` to fill, or None: allocated on ``device`` (default CPU)."""
    n = _checks.integer(n, "n")
    seed, stream = _checks.seed(seed), _checks.stream(stream, "stream")
    if out is None:
        out = torch.empty(n, dtype=torch.float32, device=device or "cpu")
    elif _checks.tensor(out, "out").numel() != n:
        raise ValueError(f"out must have n = {n} elements, got shape {list(out.shape)}")
    elif device is not None and torch.device(device) != out.device:
        raise ValueError(f"device ({device}) must be out's device ({out.device}) or None when out is given")
    torch.ops.pykernels.philox_normal_.default(out, seed, stream)
    return out


def linear_sgd_philox(
    w: torch.Tensor,
    b: torch.Tensor,
    *,
    lr: float,
    epochs: int,
    seed: int,
    first_epoch: int = 0,
    target_weight: float = 3.0,
    target_bias: float = -2.0,
    sample: str = "keep",
    buffer: torch.Tensor | None = None,
) -> torch.Tensor:
    """The write-up's large problem, ``epochs`` epochs in one call, each on a fresh sample drawn inside the
    kernel (compiled CPU and CUDA kernels, no autograd; on CUDA each epoch is two launches and no host sync).
    Epoch ``e`` draws ``x = philox_normal(N, seed, first_epoch + e)``, sets
    ``y = target_weight * sum(x) + target_bias`` (the write-up's ``dot(3 * ones, x) - 2`` by default) and steps as
    :func:`linear_sgd_step`::

        e = dot(w, x) + b - y;  w -= lr * 2 e x;  b -= lr * 2 e

    Each epoch's update is deferred into the next epoch's pass, so w is read and written once per epoch.

    Args:
        w: (N,) weights, float32 or float64, updated in place; b: (1,) or 0-d bias, updated in place.
        sample: ``"keep"`` draws each sample once and keeps it in a float32 buffer of N until the next pass has
            applied its update (4 bytes per weight of extra traffic); ``"regenerate"`` never stores it and
            draws it twice (twice the generator's work, no buffer).
        buffer: with ``sample="keep"``, a float32 tensor shaped like w to reuse (it ends holding the last
            sample); allocated per call when omitted.

    Returns:
        ``(epochs,)`` squared errors ``e^2`` of every epoch, before its step. The dot product is summed in
        float32 within tiles of 192 elements and in float64 across them.

    ``seed`` is any 64-bit key, in [0, 2^64); the epochs' streams ``first_epoch + e`` stay below 2^63. In place as
    :func:`linear_sgd_step` (torch's rules; w, b and buffer must not share memory).
    """
    w, b, buffer = _checks.tensor(w, "w"), _checks.tensor(b, "b"), _checks.optional_tensor(buffer, "buffer")
    lr = _checks.real(lr, "lr", minimum=0.0)
    epochs = _checks.integer(epochs, "epochs", minimum=1)
    seed = _checks.seed(seed)
    first_epoch = _checks.stream(first_epoch, "first_epoch", count=epochs)
    target_weight, target_bias = _checks.real(target_weight, "target_weight"), _checks.real(target_bias, "target_bias")
    if sample not in ("keep", "regenerate"):
        raise ValueError(f"sample must be 'keep' or 'regenerate', got {sample!r}")
    if sample == "keep" and buffer is None:
        buffer = torch.empty(w.shape, dtype=torch.float32, device=w.device)
    elif sample == "regenerate" and buffer is not None:
        raise ValueError("buffer is only used with sample='keep'")
    return torch.ops.pykernels.linear_sgd_philox.default(
        w, b, lr, epochs, seed, first_epoch, target_weight, target_bias, buffer
    )
