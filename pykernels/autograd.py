"""Autograd for pykernels' ops, defined once in Python.

Each op has one ``setup_context`` and one hand-written ``backward`` that calls the backend's backward *ops*
(never autograd inside). They are given to ``torch.library.register_autograd`` for the numba ops
(``torch.ops.pykernels.numba_*``) and reused by the ``autograd.Function`` classes ``PolyForward``, ``PolyMSE``
and ``Dot`` for every backend. The compiled ops carry the same formulas as C++ autograd kernels
(``csrc/autograd.cpp``), because a Python autograd node costs more than the whole fused step on small data.

The backward passes are ``once_differentiable``: a second backward through them raises instead of silently
returning a wrong (zero) second derivative.
"""

from __future__ import annotations

import functools

import torch

from ._backends import Backend, get_backend

DelayedError = torch._C._functions.DelayedError


def once_differentiable(backward):
    """Like torch's ``once_differentiable``, but stricter (as in csrc/autograd.cpp): whenever a graph was asked
    for (``create_graph=True``), the gradients pass through a node that raises if they are differentiated
    again. torch's decorator marks them only when the incoming gradients require grad, so a second derivative
    w.r.t. the inputs fails with an unrelated "does not require grad" message instead."""

    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        with torch.no_grad():
            grads = backward(ctx, *grad_outputs)
        if not torch.is_grad_enabled():
            return grads
        error = DelayedError(
            b"pykernels: trying to differentiate twice; double backward is not supported (the backward passes "
            b"are once-differentiable)",
            len(grads),
        )
        marked = error(*[None if g is None else g.detach().requires_grad_() for g in grads])
        return marked if isinstance(marked, tuple) else (marked,)

    return wrapper


# --- poly: y = p(x) ---------------------------------------------------------------------------------------


def poly_setup_context(ctx, inputs, output, backend: Backend) -> None:
    x, coeffs = inputs[:2]
    ctx.backend = backend
    ctx.save_for_backward(x, coeffs)


@once_differentiable
def poly_backward(ctx, grad_y):
    """grad_x = grad_y * p'(x); grad_coeffs[k] = sum grad_y * x^k (one fused pass)."""
    x, coeffs = ctx.saved_tensors
    grad_x, grad_coeffs = ctx.backend.poly_backward(grad_y, x, coeffs)
    needs_x, needs_coeffs = ctx.needs_input_grad[:2]
    return (grad_x if needs_x else None), (grad_coeffs if needs_coeffs else None)


# --- poly_mse: (loss, grad_coeffs) ------------------------------------------------------------------------


def poly_mse_setup_context(ctx, inputs, output, backend: Backend) -> None:
    x, y, coeffs = inputs[:3]
    _, grad_coeffs = output
    ctx.backend = backend
    ctx.mark_non_differentiable(grad_coeffs)
    needs_x, needs_y = ctx.needs_input_grad[:2]
    # The coefficient gradient was computed in the forward pass; x and y are kept only if their
    # gradients will be derived.
    ctx.save_for_backward(grad_coeffs, *((x, y, coeffs) if needs_x or needs_y else ()))


@once_differentiable
def poly_mse_backward(ctx, grad_loss, _grad_of_grad_coeffs):
    """d loss/d coeffs is the forward's grad_coeffs scaled by grad_loss; for x and y (on demand), with
    r = p(x) - y: d loss/d x = 2/N r p'(x), d loss/d y = -2/N r."""
    needs_x, needs_y, needs_coeffs = ctx.needs_input_grad[:3]
    grad_coeffs, *data = ctx.saved_tensors
    grad_x = grad_y = None
    if needs_x or needs_y:
        x, y, coeffs = data
        scaled_residual = (ctx.backend.poly(x, coeffs) - y) * (grad_loss * (2.0 / x.numel()))
        if needs_x:
            grad_x = ctx.backend.poly_backward(scaled_residual, x, coeffs)[0]
        if needs_y:
            grad_y = -scaled_residual
    return grad_x, grad_y, (grad_coeffs * grad_loss if needs_coeffs else None)


# --- dot: sum a_i b_i ---------------------------------------------------------------------------------------


def dot_setup_context(ctx, inputs, output, backend: Backend) -> None:
    a, b = inputs[:2]
    ctx.backend = backend
    ctx.save_for_backward(a, b)


@once_differentiable
def dot_backward(ctx, grad):
    """grad_a = grad * b; grad_b = grad * a."""
    a, b = ctx.saved_tensors
    needs_a, needs_b = ctx.needs_input_grad[:2]
    if needs_a and needs_b:
        return ctx.backend.dot_backward(grad, a, b)
    # Only one side is wanted (a model's weights against fixed data): write one N-vector, not two.
    return (grad * b if needs_a else None), (grad * a if needs_b else None)


_AUTOGRAD = {
    "poly": (poly_setup_context, poly_backward),
    "poly_mse": (poly_mse_setup_context, poly_mse_backward),
    "dot": (dot_setup_context, dot_backward),
}


def register_autograd_kernels(backend: Backend, prefix: str = "") -> None:
    """register_autograd for the forward ops ``pykernels::<prefix><op>`` of ``backend``."""
    for op, (setup_context, backward) in _AUTOGRAD.items():
        torch.library.register_autograd(
            f"pykernels::{prefix}{op}",
            backward,
            setup_context=functools.partial(setup_context, backend=backend),
        )


# --- autograd.Function classes: the same definitions, with a trailing ``backend`` argument -----------------
#
# The forwards take ``ctx`` and call the shared setup_context themselves instead of declaring a
# ``setup_context`` staticmethod: with one declared, every ``apply`` binds its arguments through
# ``inspect.signature``, which measured 13 us of the 20 us a call costs on the seed's 100-point problem.


class PolyForward(torch.autograd.Function):
    """``PolyForward.apply(x, coeffs, backend="cpp")`` = p(x), with a hand-written backward."""

    @staticmethod
    def forward(ctx, x, coeffs, backend="cpp"):
        ops = get_backend(backend)
        y = ops.poly(x, coeffs)
        poly_setup_context(ctx, (x, coeffs), y, ops)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return (*poly_backward(ctx, grad_y), None)


class PolyMSE(torch.autograd.Function):
    """``loss, grad_coeffs = PolyMSE.apply(x, y, coeffs, backend="cpp")``: loss = mean((p(x) - y)^2) and its
    coefficient gradient, in one pass; ``loss.backward()`` reuses that gradient."""

    @staticmethod
    def forward(ctx, x, y, coeffs, backend="cpp"):
        ops = get_backend(backend)
        output = ops.poly_mse(x, y, coeffs)
        poly_mse_setup_context(ctx, (x, y, coeffs), output, ops)
        return output

    @staticmethod
    def backward(ctx, grad_loss, grad_of_grad_coeffs):
        return (*poly_mse_backward(ctx, grad_loss, grad_of_grad_coeffs), None)


class Dot(torch.autograd.Function):
    """``Dot.apply(a, b, backend="cpp")`` = sum_i a_i b_i, accumulated in float64, hand-written backward."""

    @staticmethod
    def forward(ctx, a, b, backend="cpp"):
        ops = get_backend(backend)
        result = ops.dot(a, b)
        dot_setup_context(ctx, (a, b), result, ops)
        return result

    @staticmethod
    def backward(ctx, grad):
        return (*dot_backward(ctx, grad), None)
