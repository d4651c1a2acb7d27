"""pykernels' public functions: thin, typed wrappers that check their Python arguments, pick the backend and call
its op.

``p(x) = c_0 + c_1 x + ... + c_D x^D`` with ``coeffs = (c_0, ..., c_D)``. ``poly``, ``poly_mse`` and ``dot`` have
exact derivatives of every order (hand-written, csrc/autograd.cpp) through every autograd route, torch.func and
forward mode included; ``fit_poly``, ``linear_sgd_*`` and ``philox_normal`` are not differentiable and raise if
differentiated. Everything works under ``torch.compile`` and ``torch.export``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.utils._pytree as pytree

from . import _checks
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
        ``y`` with the shape of ``x``.
    """
    return get_backend(backend).poly(_checks.tensor(x, "x"), _checks.tensor(coeffs, "coeffs"))


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


def fit_poly(
    x: torch.Tensor,
    y: torch.Tensor,
    degree: int,
    *,
    lr: float,
    steps: int,
    record_every: int = 1,
    init: torch.Tensor | None = None,
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
        backend: ``"cpp"`` (default), ``"numba"`` or ``"torch"`` (the reference loop).

    Not differentiable: with ``init`` (or the data) requiring grad, backpropagating through the result raises.
    """
    x, y, init = _checks.tensor(x, "x"), _checks.tensor(y, "y"), _checks.optional_tensor(init, "init")
    degree = _checks.integer(degree, "degree", maximum=_checks.INT64_MAX - 1)
    lr = _checks.real(lr, "lr", minimum=0.0)
    steps = _checks.integer(steps, "steps")
    record_every = _checks.integer(record_every, "record_every", minimum=1)
    ops = get_backend(backend)
    batch = (y.shape[0],) if y.dim() == 2 else ()
    if init is None:
        init = torch.zeros((*batch, degree + 1), dtype=y.dtype, device=y.device)
    elif init.dim() == 0 or init.shape[-1] != degree + 1:
        raise ValueError(
            f"init must have shape (degree + 1,) or (B, degree + 1) with degree + 1 = {degree + 1}, got "
            f"{list(init.shape)}"
        )
    return FitResult(*ops.fit_poly(x, y, init, lr, steps, record_every))


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
