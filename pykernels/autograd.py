"""``autograd.Function`` classes for pykernels' differentiable ops: ``PolyForward``, ``PolyMSE``, ``Dot``.

``PolyMSE.apply(x, y, coeffs, backend)`` and friends run any backend's op (``"cpp"``, ``"numba"`` or the plain-torch
``"torch"``) inside a Python autograd node whose derivatives are written by hand, in terms of the backend's ops.
Those ops are differentiable themselves (the compiled and numba ops through their C++ autograd kernels,
csrc/autograd.cpp, which carry the same formulas; the torch reference through torch), so the Functions have exact
derivatives of every order by ``.backward``, ``autograd.grad`` and ``autograd.functional``. Under ``torch.compile``,
``torch.func`` transforms and forward-mode AD, ``apply`` runs the op itself (same values, same derivatives).
With p(x) = sum_k c_k x^k and N = x.numel()::

    poly:      y = p(x)                 x-bar = y-bar p'(x);   c-bar_k = sum_i y-bar_i x_i^k
    poly_mse:  r = p(x) - y, L = mean(r^2), G_k = 2/N sum_i r_i x_i^k; for cotangents (l, h) of (L, G),
               s = 2/N (l r + p_h(x));  y-bar = -s;  x-bar = s p'(x) + 2/N r p_h'(x);  c-bar_k = sum_i s_i x_i^k
    dot:       a-bar = g b;  b-bar = g a

The public functions (``pykernels.poly`` etc.) call the registered ops directly, without a Python node: that is
the faster route; these classes are the one for users who want an ``autograd.Function``.
"""

from __future__ import annotations

import torch
from torch._functorch.utils import unwrap_dead_wrappers
from torch.autograd import forward_ad

from . import _checks
from ._backends import Backend, get_backend


def _apply(cls: type[torch.autograd.Function], op: str, args: tuple):
    """``Function.apply`` without its ``inspect.signature`` binding of default arguments (13 us of a 20 us call on
    the seed's problem): our ``apply`` methods already pass every argument positionally.

    Under torch.compile, torch.func transforms and forward-mode AD the backend's op runs instead, with the same
    values and derivatives: the ops compose with every transform, while an autograd.Function does not (torch runs a
    Function's ``jvp`` with the outer levels' forward-mode AD off, so ``jacfwd(jacfwd(...))`` through any Function
    is silently zero, and dynamo cannot trace a custom ``jvp``)."""
    *tensors, backend = args
    for tensor, name in zip(tensors, _ARGUMENT_NAMES[op], strict=True):
        _checks.check_tensor(tensor, name)
    get_backend(backend)  # a bad name is reported before anything runs
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return getattr(get_backend(backend), op)(*tensors)
    return super(torch.autograd.Function, cls).apply(*unwrap_dead_wrappers(args))


_ARGUMENT_NAMES = {"poly": ("x", "coeffs"), "poly_mse": ("x", "y", "coeffs"), "dot": ("a", "b")}


def _save(ctx, backend: str, *tensors: torch.Tensor) -> None:
    """What every Function here keeps for backward: the backend's op table and ``tensors``; gradients that are not
    computed stay None (never materialized zeros)."""
    ctx.ops = get_backend(backend)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*tensors)


def _add(total: torch.Tensor | None, term: torch.Tensor | None) -> torch.Tensor | None:
    """total + term, where None is a zero that was never materialized."""
    if term is None:
        return total
    return term if total is None else total + term


def _derivative_coeffs(coeffs: torch.Tensor) -> torch.Tensor | None:
    """The coefficients of p' for those of p: (1 c_1, ..., D c_D); None for D = 0 (p' = 0)."""
    degree = coeffs.shape[0] - 1
    if degree == 0:
        return None
    return coeffs[1:] * torch.arange(1, degree + 1, dtype=coeffs.dtype, device=coeffs.device)


def _two_over_n(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t * (2.0 / x.numel())


class PolyForward(torch.autograd.Function):
    """``PolyForward.apply(x, coeffs, backend="cpp")`` = p(x), with hand-written derivatives."""

    @staticmethod
    def forward(x, coeffs, backend="cpp"):
        return get_backend(backend).poly(x, coeffs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs[-1], *inputs[:-1])

    @staticmethod
    def backward(ctx, grad_y):
        """x-bar = y-bar p'(x); c-bar_k = sum y-bar x^k (one fused pass)."""
        needs_x, needs_coeffs = ctx.needs_input_grad[:2]
        if grad_y is None:
            return None, None, None
        grad_x, grad_coeffs = ctx.ops.poly_backward(grad_y, *ctx.saved_tensors)
        return (grad_x if needs_x else None), (grad_coeffs if needs_coeffs else None), None

    @classmethod
    def apply(cls, x, coeffs, backend="cpp"):
        return _apply(cls, "poly", (x, coeffs, backend))


class PolyMSE(torch.autograd.Function):
    """``loss, grad_coeffs = PolyMSE.apply(x, y, coeffs, backend="cpp")``: loss = mean((p(x) - y)^2) and its
    coefficient gradient, in one pass; ``loss.backward()`` reuses that gradient. Both outputs are differentiable
    (grad_coeffs' derivative is the Hessian 2/N V^T V, V the power matrix)."""

    @staticmethod
    def forward(x, y, coeffs, backend="cpp"):
        return get_backend(backend).poly_mse(x, y, coeffs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs[-1], *inputs[:-1], output[1])  # x, y, coeffs and grad_coeffs

    @staticmethod
    def backward(ctx, grad_loss, grad_of_grad_coeffs):
        """With only coeffs wanted and no cotangent h for grad_coeffs, c-bar = l G: the forward's own gradient."""
        needs_x, needs_y, needs_coeffs = ctx.needs_input_grad[:3]
        x, y, coeffs, grad_coeffs = ctx.saved_tensors
        ops: Backend = ctx.ops
        h = grad_of_grad_coeffs
        if not (needs_x or needs_y):
            grad_c = None
            if needs_coeffs and grad_loss is not None:
                grad_c = grad_coeffs * grad_loss
            if needs_coeffs and h is not None:  # the Hessian-vector product 2/N sum_i p_h(x_i) x_i^k
                grad_c = _add(grad_c, ops.poly_backward(_two_over_n(ops.poly(x, h), x), x, coeffs)[1])
            return None, None, grad_c, None
        if grad_loss is None and h is None:
            return None, None, None, None
        residual = ops.poly(x, coeffs) - y
        s = residual * grad_loss if grad_loss is not None else None
        if h is not None:
            s = _add(s, ops.poly(x, h))
        s = _two_over_n(s, x)
        grad_x, grad_c = ops.poly_backward(s, x, coeffs)
        h_prime = None if h is None else _derivative_coeffs(h)
        if h_prime is not None:
            grad_x = grad_x + _two_over_n(residual, x) * ops.poly(x, h_prime)
        return (grad_x if needs_x else None), (-s if needs_y else None), (grad_c if needs_coeffs else None), None

    @classmethod
    def apply(cls, x, y, coeffs, backend="cpp"):
        return _apply(cls, "poly_mse", (x, y, coeffs, backend))


class Dot(torch.autograd.Function):
    """``Dot.apply(a, b, backend="cpp")`` = sum_i a_i b_i, accumulated in float64, hand-written derivatives."""

    @staticmethod
    def forward(a, b, backend="cpp"):
        return get_backend(backend).dot(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, inputs[-1], *inputs[:-1])

    @staticmethod
    def backward(ctx, grad):
        """a-bar = g b; b-bar = g a."""
        needs_a, needs_b = ctx.needs_input_grad[:2]
        if grad is None:
            return None, None, None
        a, b = ctx.saved_tensors
        if needs_a and needs_b:
            return (*ctx.ops.dot_backward(grad, a, b), None)
        # Only one side is wanted (a model's weights against fixed data): write one N-vector, not two.
        return (grad * b if needs_a else None), (grad * a if needs_b else None), None

    @classmethod
    def apply(cls, a, b, backend="cpp"):
        return _apply(cls, "dot", (a, b, backend))
