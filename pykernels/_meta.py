"""Fake (meta) kernels: output shapes, dtypes and strides of every op, for torch.compile and FakeTensor.

They run the same argument checks as the kernels, so a bad call fails at trace time with the same message.
"""

from __future__ import annotations

import torch

from . import _checks


def _contiguous_like(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(t.shape)  # the kernels return contiguous outputs


def _allows_reduced(t: torch.Tensor) -> bool:
    return t.device.type == "cuda"  # float16/bfloat16 are CUDA-only


def _poly_fake(x, coeffs):
    _checks.check_poly_inputs(x, coeffs, _allows_reduced(x))
    return _contiguous_like(x)


def _poly_backward_fake(grad_y, x, coeffs):
    _checks.check_poly_backward_inputs(grad_y, x, coeffs, _allows_reduced(x))
    return _contiguous_like(x), _contiguous_like(coeffs)


def _poly_mse_fake(x, y, coeffs):
    _checks.check_poly_mse_inputs(x, y, coeffs, _allows_reduced(x))
    return x.new_empty(()), _contiguous_like(coeffs)


def _dot_fake(a, b):
    _checks.check_dot_inputs(a, b, _allows_reduced(a))
    return a.new_empty(())


def _dot_backward_fake(grad, a, b):
    _checks.check_dot_backward_inputs(grad, a, b, _allows_reduced(a))
    return _contiguous_like(a), _contiguous_like(b)


FAKE_KERNELS = {
    "poly": _poly_fake,
    "poly_backward": _poly_backward_fake,
    "poly_mse": _poly_mse_fake,
    "dot": _dot_fake,
    "dot_backward": _dot_backward_fake,
}


def register_fake_kernels(prefix: str = "") -> None:
    """register_fake for every ``pykernels::<prefix><op>``."""
    for op, fake in FAKE_KERNELS.items():
        torch.library.register_fake(f"pykernels::{prefix}{op}", fake)
