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
