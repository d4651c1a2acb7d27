"""The write-ups' own formulas, in plain torch and plain NumPy: the references every backend is tested
against and the baselines every benchmark compares with.

They build the power matrix ``X[i, k] = x_i ** k`` exactly as the polynomial write-up does
(``x ** range(D + 1)``), so they cost N x (D+1) memory; pykernels' kernels never do.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "dot_backward_torch",
    "dot_numpy",
    "dot_torch",
    "fit_poly_numpy",
    "fit_poly_torch",
    "poly_backward_numpy",
    "poly_backward_torch",
    "poly_mse_numpy",
    "poly_mse_torch",
    "poly_numpy",
    "poly_torch",
    "power_matrix_numpy",
    "power_matrix_torch",
]


def power_matrix_torch(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``X[..., k] = x ** k`` for k = 0..degree (the write-up's ``x ** torch.arange(0.0, D)``)."""
    return x.unsqueeze(-1) ** torch.arange(degree + 1, dtype=x.dtype, device=x.device)


def power_matrix_numpy(x: np.ndarray, degree: int) -> np.ndarray:
    """``X[..., k] = x ** k`` for k = 0..degree (the write-up's ``x ** range(D)``)."""
    return x[..., None] ** np.arange(degree + 1, dtype=x.dtype)


def poly_torch(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """y = p(x) = X @ coeffs; differentiable by torch autograd."""
    return power_matrix_torch(x, coeffs.numel() - 1) @ coeffs


def poly_numpy(x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """y = p(x) = X @ coeffs."""
    return power_matrix_numpy(x, coeffs.size - 1) @ coeffs


def poly_backward_torch(
    grad_y: torch.Tensor, x: torch.Tensor, coeffs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_x = grad_y * p'(x), p'(x) = sum_k k c_k x^(k-1); grad_coeffs = X^T grad_y (summed over x's shape)."""
    degree = coeffs.numel() - 1
    powers = power_matrix_torch(x, degree)
    k = torch.arange(degree + 1, dtype=x.dtype, device=x.device)
    derivative = powers[..., :degree] @ (k[1:] * coeffs[1:])  # (N, 0) @ (0,) gives zeros for degree 0
    grad_coeffs = powers.reshape(-1, degree + 1).T @ grad_y.reshape(-1)
    return grad_y * derivative, grad_coeffs


def poly_backward_numpy(grad_y: np.ndarray, x: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`poly_backward_torch`."""
    degree = coeffs.size - 1
    powers = power_matrix_numpy(x, degree)
    k = np.arange(degree + 1, dtype=x.dtype)
    derivative = powers[..., :degree] @ (k[1:] * coeffs[1:])
    grad_coeffs = powers.reshape(-1, degree + 1).T @ grad_y.reshape(-1)
    return grad_y * derivative, grad_coeffs


def poly_mse_torch(x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The write-up's step: r = X c - y; loss = mean(r^2); grad = 2/N X^T r (its ``-2/N X^T (y - X c)``)."""
    powers = power_matrix_torch(x, coeffs.numel() - 1).reshape(-1, coeffs.numel())
    residual = powers @ coeffs - y.reshape(-1)
    return (residual**2).mean(), (2.0 / residual.numel()) * (powers.T @ residual)


def poly_mse_numpy(x: np.ndarray, y: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`poly_mse_torch`."""
    powers = power_matrix_numpy(x, coeffs.size - 1).reshape(-1, coeffs.size)
    residual = powers @ coeffs - y.reshape(-1)
    return (residual**2).mean(), (2.0 / residual.size) * (powers.T @ residual)


def dot_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_i a_i b_i, as the large-problem write-up computes it (``torch.dot``)."""
    return torch.dot(a, b)


def dot_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_i a_i b_i (``numpy.dot``)."""
    return np.dot(a, b)


def dot_backward_torch(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_a = grad * b; grad_b = grad * a."""
    return grad * b, grad * a


def fit_poly_torch(
    x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor, lr: float, steps: int, record_every: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` steps of ``coeffs -= lr * grad`` on :func:`poly_mse_torch`, recording the loss before every
    ``record_every``-th update. y (N,) or (B, N) for B independent fits; x (N,) shared or like y; coeffs the
    initial (D+1,) or (B, D+1)."""
    batched = y.dim() == 2
    ys = y if batched else y.unsqueeze(0)
    xs = x.expand_as(ys) if x.dim() == 1 else x.reshape(ys.shape)
    w = coeffs.expand(ys.shape[0], coeffs.shape[-1]).clone()
    trace = []
    for step in range(steps):
        results = [poly_mse_torch(xs[b], ys[b], w[b]) for b in range(ys.shape[0])]
        if step % record_every == 0:
            trace.append(torch.stack([loss for loss, _ in results]))
        w = w - lr * torch.stack([grad for _, grad in results])
    trace = torch.stack(trace, dim=-1) if trace else w.new_empty((ys.shape[0], 0))
    return (w, trace) if batched else (w[0], trace[0])


def fit_poly_numpy(
    x: np.ndarray, y: np.ndarray, coeffs: np.ndarray, lr: float, steps: int, record_every: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Batched NumPy gradient descent, the batched baseline: with a shared x, one matmul for all series per
    step and one for all gradients (``W @ X.T``, ``R @ X``); with per-series x, the same as an einsum."""
    ys = np.atleast_2d(y)
    degree = np.shape(coeffs)[-1] - 1
    w = np.broadcast_to(coeffs, (ys.shape[0], degree + 1)).astype(ys.dtype)
    shared = np.ndim(x) == 1
    powers = power_matrix_numpy(np.asarray(x, ys.dtype) if shared else np.broadcast_to(x, ys.shape), degree)
    trace = []
    scale = ys.dtype.type(2.0 / ys.shape[1])
    for step in range(steps):
        residual = (w @ powers.T if shared else np.einsum("bnk,bk->bn", powers, w)) - ys
        if step % record_every == 0:
            trace.append((residual**2).mean(axis=1))
        w -= lr * scale * (residual @ powers if shared else np.einsum("bnk,bn->bk", powers, residual))
    trace = np.stack(trace, axis=-1) if trace else np.empty((ys.shape[0], 0), w.dtype)
    return (w, trace) if np.ndim(y) == 2 else (w[0], trace[0])
