"""vmap rules of the kernel ops (both families), for ``torch.func.vmap`` and the transforms built on it (jacrev,
jacfwd, hessian).

The reductions (poly_mse, poly_backward's coefficient sums, dot) sum over a whole sample with one set of
coefficients, so a batch of them runs one kernel per sample. Where an op is elementwise in the batched argument
(poly of a batch of x) the batch is one call, and a vmap of single fits over their data is one batched fit_poly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _empty_batch(op: Callable, in_dims, args):
    """The outputs of an empty batch: the op's output shapes (its meta kernel, on a sample of the batch's shapes)
    behind a batch dimension of 0."""

    def meta_sample(arg, dim):
        if not isinstance(arg, torch.Tensor):
            return arg
        shape = arg.shape if dim is None else (*arg.shape[:dim], *arg.shape[dim + 1 :])
        return arg.new_empty(shape, device="meta")

    reference = next(arg for arg, dim in zip(args, in_dims, strict=True) if dim is not None)
    meta = op(*(meta_sample(arg, dim) for arg, dim in zip(args, in_dims, strict=True)))
    outputs = meta if isinstance(meta, tuple) else (meta,)
    empty = tuple(reference.new_empty((0, *out.shape)) for out in outputs)
    return (empty, (0,) * len(empty)) if isinstance(meta, tuple) else (empty[0], 0)


def _per_sample(op: Callable) -> Callable:
    """The rule that calls ``op`` once per sample and stacks the results along dim 0."""

    def rule(info, in_dims, *args):
        if info.batch_size == 0:
            return _empty_batch(op, in_dims, args)
        samples = [
            op(*(arg if dim is None else arg.select(dim, i) for arg, dim in zip(args, in_dims, strict=True)))
            for i in range(info.batch_size)
        ]
        if isinstance(samples[0], tuple):
            return tuple(torch.stack(outputs) for outputs in zip(*samples, strict=True)), (0,) * len(samples[0])
        return torch.stack(samples), 0

    return rule


def _poly(op: Callable) -> Callable:
    per_sample = _per_sample(op)

    def rule(info, in_dims, x, coeffs):
        x_dim, coeffs_dim = in_dims
        if coeffs_dim is None and info.batch_size > 0:  # elementwise in x: the whole batch in one call
            return op(x, coeffs), x_dim
        return per_sample(info, in_dims, x, coeffs)

    return rule


def _fit_poly(op: Callable) -> Callable:
    per_sample = _per_sample(op)

    def rule(info, in_dims, x, y, coeffs, lr, steps, record_every):
        x_dim, y_dim, coeffs_dim = in_dims[:3]
        single = (x.dim() - (x_dim is not None), y.dim() - (y_dim is not None)) == (1, 1)
        if not single or coeffs.dim() - (coeffs_dim is not None) != 1 or info.batch_size == 0:
            return per_sample(info, in_dims, x, y, coeffs, lr, steps, record_every)
        # single fits over a batch of data: one batched fit (x (N,) shared or (B, N), coefficients shared or not)
        ys = y.movedim(y_dim, 0) if y_dim is not None else y.expand(info.batch_size, -1)
        xs = x.movedim(x_dim, 0) if x_dim is not None else x
        cs = coeffs.movedim(coeffs_dim, 0) if coeffs_dim is not None else coeffs
        return op(xs, ys, cs, lr, steps, record_every), (0, 0)

    return rule


_RULES = {
    "poly": _poly,
    "poly_backward": _per_sample,
    "poly_mse": _per_sample,
    "dot": _per_sample,
    "dot_backward": _per_sample,
    "fit_poly": _fit_poly,
    "poly_moments": _per_sample,
    "fit_poly_moments": _per_sample,
}


def register_vmap_rules(prefix: str = "") -> None:
    """register_vmap for the ops ``pykernels::<prefix><op>``."""
    for name, make_rule in _RULES.items():
        op = getattr(torch.ops.pykernels, prefix + name).default
        torch.library.register_vmap(f"pykernels::{prefix}{name}", make_rule(op))
