"""Fake (meta) kernels: output shapes, dtypes and strides of every op, for torch.compile and FakeTensor.

They run the same argument checks as the kernels, so a bad call fails at trace time with the same message.
"""

from __future__ import annotations

import torch

from . import _checks


def _contiguous_like(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(t.shape)  # the kernels return contiguous outputs


def _allows_reduced(t: torch.Tensor, reduced_on_cuda: bool) -> bool:
    return reduced_on_cuda and t.device.type == "cuda"  # float16/bfloat16: the C++ CUDA kernels only


def _fake_kernels(reduced_on_cuda: bool) -> dict:
    def poly(x, coeffs):
        _checks.check_poly_inputs(x, coeffs, _allows_reduced(x, reduced_on_cuda))
        return _contiguous_like(x)

    def poly_backward(grad_y, x, coeffs):
        _checks.check_poly_backward_inputs(grad_y, x, coeffs, _allows_reduced(x, reduced_on_cuda))
        return _contiguous_like(x), _contiguous_like(coeffs)

    def poly_mse(x, y, coeffs):
        _checks.check_poly_mse_inputs(x, y, coeffs, _allows_reduced(x, reduced_on_cuda))
        return x.new_empty(()), _contiguous_like(coeffs)

    def dot(a, b):
        _checks.check_dot_inputs(a, b, _allows_reduced(a, reduced_on_cuda))
        return a.new_empty(())

    def dot_backward(grad, a, b):
        _checks.check_dot_backward_inputs(grad, a, b, _allows_reduced(a, reduced_on_cuda))
        return _contiguous_like(a), _contiguous_like(b)

    def fit_poly(x, y, coeffs, lr, steps, record_every):
        _checks.check_fit_poly_inputs(x, y, coeffs, lr, steps, record_every)
        records = -(-steps // record_every)
        if y.dim() == 2:
            return y.new_empty((y.shape[0], coeffs.shape[-1])), y.new_empty((y.shape[0], records))
        return coeffs.new_empty(coeffs.shape), y.new_empty((records,))

    def poly_moments(x, y, degree):
        _checks.check_poly_moments_inputs(x, y, degree)
        wide = {"dtype": torch.float64}
        return (
            x.new_empty((*x.shape[:-1], 2 * degree + 1), **wide),
            y.new_empty((*y.shape[:-1], degree + 1), **wide),
            y.new_empty(y.shape[:-1], **wide),
        )

    def fit_poly_moments(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every):
        _checks.check_fit_poly_moments_inputs(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every)
        records = -(-steps // record_every)
        batch = cross_sums.shape[:-1]
        return coeffs.new_empty(cross_sums.shape), coeffs.new_empty((*batch, records))

    return {
        "poly": poly,
        "poly_backward": poly_backward,
        "poly_mse": poly_mse,
        "dot": dot,
        "dot_backward": dot_backward,
        "fit_poly": fit_poly,
        "poly_moments": poly_moments,
        "fit_poly_moments": fit_poly_moments,
    }


def register_fake_kernels(prefix: str = "", reduced_on_cuda: bool = True) -> None:
    """register_fake for every ``pykernels::<prefix><op>``; ``reduced_on_cuda``: whether the backend's CUDA
    kernels take float16/bfloat16."""
    for op, fake in _fake_kernels(reduced_on_cuda).items():
        torch.library.register_fake(f"pykernels::{prefix}{op}", fake)


@torch.library.register_fake("pykernels::_fit_poly_moments_checked")
def _fit_poly_moments_checked_fake(power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every):
    fitted, trace = _fake_kernels(False)["fit_poly_moments"](
        power_sums, cross_sums, square_sum, coeffs, lr, steps, record_every
    )
    batch = cross_sums.shape[:-1]
    return fitted, trace, coeffs.new_empty(batch, dtype=torch.bool), coeffs.new_empty(batch, dtype=torch.float64)


@torch.library.register_fake("pykernels::linear_sgd_step")
def _linear_sgd_step_fake(w, b, x, y, lr):
    _checks.check_floating(w, "w")
    _checks.check_same_dtype_and_device((w, "w"), (x, "x"), (b, "b"), (y, "y"))
    if w.dim() != 1:
        raise ValueError(f"w must be 1-D, got shape {_checks.shape_text(w)}")
    _checks.check_not_empty(w, "w")
    _checks.check_same_shape(w, "w", x, "x")
    _checks.check_scalar(b, "b")
    _checks.check_scalar(y, "y")
    return w.new_empty(())


@torch.library.register_fake("pykernels::philox_normal_")
def _philox_normal_fake(out, seed, stream):
    if out.dtype != torch.float32:
        raise TypeError(f"out must be a float32 tensor, got {out.dtype}")
    _checks.check_philox_args(seed, stream)


@torch.library.register_fake("pykernels::linear_sgd_philox")
def _linear_sgd_philox_fake(w, b, lr, epochs, seed, first_epoch, target_weight, target_bias, buffer):
    _checks.check_floating(w, "w")
    _checks.check_same_dtype_and_device((w, "w"), (b, "b"))
    _checks.check_scalar(b, "b")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    _checks.check_philox_args(seed, first_epoch)
    if first_epoch + epochs - 1 >= 2**63:
        raise ValueError(
            "the last stream, first_epoch + epochs - 1, must be below 2^63, got first_epoch = "
            f"{first_epoch} and epochs = {epochs}"
        )
    if buffer is not None:
        if buffer.dtype != torch.float32:
            raise TypeError(f"buffer must be a float32 tensor, got {buffer.dtype}")
        if buffer.device != w.device:
            raise RuntimeError(f"buffer must be on the same device as w ({w.device}), got {buffer.device}")
        _checks.check_same_shape(w, "w", buffer, "buffer")
    return w.new_empty((epochs,))
