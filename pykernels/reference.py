"""The references every backend is tested against, and the write-ups' own formulas, the baselines every
benchmark compares with.

- The definitions, in plain torch (``poly_torch``, ``poly_backward_torch``, ``poly_mse_torch``, ``dot_torch``, ...):
  what each op computes, special values included. ``p(x)`` and ``p'(x)`` by Horner's rule, as the op is defined,
  and the power sums ``sum_i w_i x_i^k`` as running products ``w_i x_i x_i ...``, as the kernels form them, so
  inf and NaN propagate exactly as in the kernels' float64 math; differentiable by torch to every order. They are
  backend ``"torch"``.
- The write-ups' formulas (``writeup_*_torch``, the NumPy ones): the power matrix ``X[i, k] = x_i ** k`` exactly as
  the polynomial write-up builds it (``x ** range(D + 1)``), at N x (D+1) memory, which pykernels' kernels never
  use. Equal to the definitions for finite values, up to rounding.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "dot_backward_torch",
    "dot_numpy",
    "dot_torch",
    "fit_poly_moments_torch",
    "fit_poly_numpy",
    "fit_poly_torch",
    "gram_system_torch",
    "linear_sgd_philox_torch",
    "philox4x32_10_numpy",
    "philox_normal_numpy",
    "poly_backward_numpy",
    "poly_backward_torch",
    "poly_moments_torch",
    "poly_mse_numpy",
    "poly_mse_torch",
    "poly_numpy",
    "poly_torch",
    "power_matrix_numpy",
    "power_matrix_torch",
    "weighted_powers_torch",
    "writeup_poly_backward_torch",
    "writeup_poly_mse_torch",
    "writeup_poly_torch",
]


# --- the definitions -------------------------------------------------------------------------------------------


def poly_torch(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """y = p(x) = (...(c_D x + c_(D-1)) x + ...) x + c_0, elementwise, by Horner's rule."""
    y = torch.zeros_like(x) + coeffs[-1]
    for k in range(coeffs.shape[0] - 2, -1, -1):
        y = y * x + coeffs[k]
    return y


def weighted_powers_torch(weights: torch.Tensor, x: torch.Tensor, degree: int) -> torch.Tensor:
    """``out[..., k] = weights * x * ... * x`` (k factors of x, multiplied left to right) for k = 0..degree."""
    return torch.cumprod(torch.stack([weights, *[x] * degree], dim=-1), dim=-1)


def poly_backward_torch(
    grad_y: torch.Tensor, x: torch.Tensor, coeffs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_x = grad_y * p'(x), p' by Horner on (1 c_1, ..., D c_D); grad_coeffs[k] = sum grad_y x^k."""
    degree = coeffs.shape[0] - 1
    if degree == 0:
        grad_x = grad_y * torch.zeros_like(x)
    else:
        derivative = coeffs[1:] * torch.arange(1, degree + 1, dtype=coeffs.dtype, device=coeffs.device)
        grad_x = grad_y * poly_torch(x, derivative)
    return grad_x, weighted_powers_torch(grad_y, x, degree).reshape(x.numel(), degree + 1).sum(0)


def poly_mse_torch(x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r = p(x) - y; loss = mean(r^2); grad_coeffs[k] = 2/N sum r x^k."""
    degree = coeffs.shape[0] - 1
    residual = poly_torch(x, coeffs) - y
    power_sums = weighted_powers_torch(residual, x, degree).reshape(x.numel(), degree + 1).sum(0)
    return (residual * residual).mean(), (2.0 / residual.numel()) * power_sums


def poly_moments_torch(
    x: torch.Tensor, y: torch.Tensor, degree: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sufficient statistics of a least-squares fit of degree D, in float64: ``power_sums[p] = sum_i x_i^p``
    (p = 0..2D), ``cross_sums[k] = sum_i y_i x_i^k`` (k = 0..D), ``square_sum = sum_i y_i^2``, summed over the
    last dimension (x (N,) shared by a (B, N) y gives one power_sums)."""
    xs, ys = x.double(), y.double()
    power_sums = weighted_powers_torch(torch.ones_like(xs), xs, 2 * degree).sum(-2)
    cross_sums = weighted_powers_torch(ys, xs.expand_as(ys), degree).sum(-2)
    return power_sums, cross_sums, (ys * ys).sum(-1)


def gram_system_torch(
    power_sums: torch.Tensor, cross_sums: torch.Tensor, square_sum: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``A = V^T V / N`` (the Hankel matrix ``A[j, k] = power_sums[j + k] / N``), ``b = V^T y / N`` and
    ``s = y^T y / N`` from the sums, N = power_sums[..., 0]; batch dimensions lead."""
    terms = cross_sums.shape[-1]
    count = power_sums[..., :1]
    index = torch.arange(terms, device=power_sums.device)
    gram = (power_sums / count)[..., index[:, None] + index[None, :]]
    return gram, cross_sums / count, square_sum / count[..., 0]


def fit_poly_moments_torch(
    power_sums: torch.Tensor,
    cross_sums: torch.Tensor,
    square_sum: torch.Tensor,
    coeffs: torch.Tensor,
    lr: float,
    steps: int,
    record_every: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient descent on the quadratic form, in float64: ``u = A c; loss = c.u - 2 c.b + s; c -= 2 lr (u - b)``
    (:func:`gram_system_torch`), recording the loss before every ``record_every``-th update; the results in coeffs'
    dtype. Batched when cross_sums is (B, D+1)."""
    gram, target, offset = gram_system_torch(power_sums, cross_sums, square_sum)
    c = coeffs.double().expand(target.shape).clone()
    trace = []
    for step in range(steps):
        u = (gram @ c.unsqueeze(-1)).squeeze(-1)
        if step % record_every == 0:
            trace.append((c * u).sum(-1) - 2 * (c * target).sum(-1) + offset)
        c = c - 2 * lr * (u - target)
    trace = torch.stack(trace, dim=-1) if trace else c.new_empty((*target.shape[:-1], 0))
    return c.to(coeffs.dtype), trace.to(coeffs.dtype)


# --- the write-ups' formulas (the baselines) ---------------------------------------------------------------------


def power_matrix_torch(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``X[..., k] = x ** k`` for k = 0..degree (the write-up's ``x ** torch.arange(0.0, D)``)."""
    return x.unsqueeze(-1) ** torch.arange(degree + 1, dtype=x.dtype, device=x.device)


def power_matrix_numpy(x: np.ndarray, degree: int) -> np.ndarray:
    """``X[..., k] = x ** k`` for k = 0..degree (the write-up's ``x ** range(D)``)."""
    return x[..., None] ** np.arange(degree + 1, dtype=x.dtype)


def writeup_poly_torch(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """y = p(x) = X @ coeffs."""
    return power_matrix_torch(x, coeffs.numel() - 1) @ coeffs


def poly_numpy(x: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """y = p(x) = X @ coeffs."""
    return power_matrix_numpy(x, coeffs.size - 1) @ coeffs


def writeup_poly_backward_torch(
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
    """NumPy twin of :func:`writeup_poly_backward_torch`."""
    degree = coeffs.size - 1
    powers = power_matrix_numpy(x, degree)
    k = np.arange(degree + 1, dtype=x.dtype)
    derivative = powers[..., :degree] @ (k[1:] * coeffs[1:])
    grad_coeffs = powers.reshape(-1, degree + 1).T @ grad_y.reshape(-1)
    return grad_y * derivative, grad_coeffs


def writeup_poly_mse_torch(x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The write-up's step: r = X c - y; loss = mean(r^2); grad = 2/N X^T r (its ``-2/N X^T (y - X c)``)."""
    powers = power_matrix_torch(x, coeffs.numel() - 1).reshape(-1, coeffs.numel())
    residual = powers @ coeffs - y.reshape(-1)
    return (residual**2).mean(), (2.0 / residual.numel()) * (powers.T @ residual)


def poly_mse_numpy(x: np.ndarray, y: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`writeup_poly_mse_torch`."""
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
    """grad_a = grad * b; grad_b = grad * a (grad: one value, of any shape)."""
    grad = grad.reshape(())
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


_PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)


def philox4x32_10_numpy(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 (Salmon et al., SC'11) of each row of ``counters`` (M, 4) under ``key`` (2 words): (M, 4)
    uint32 words. Written from the paper, independently of csrc/common/philox.h, and checked against Random123's
    known-answer vectors in the tests."""
    c = [np.asarray(counters, dtype=np.uint64)[:, i] for i in range(4)]
    k0, k1 = (np.uint64(word) for word in key)
    mask = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        product0 = c[0] * np.uint64(_PHILOX_MULTIPLIERS[0])  # < 2^64: exact in uint64
        product1 = c[2] * np.uint64(_PHILOX_MULTIPLIERS[1])
        c = [
            (product1 >> np.uint64(32)) ^ c[1] ^ k0,
            product1 & mask,
            (product0 >> np.uint64(32)) ^ c[3] ^ k1,
            product0 & mask,
        ]
        k0 = (k0 + np.uint64(_PHILOX_WEYL[0])) & mask
        k1 = (k1 + np.uint64(_PHILOX_WEYL[1])) & mask
    return np.stack(c, axis=1).astype(np.uint32)


def philox_normal_numpy(n: int, seed: int, stream: int) -> np.ndarray:
    """The sample ``pykernels.philox_normal(n, seed=seed, stream=stream)`` defines, in float64: element
    ``i = 64 m + 16 k + l`` is output k of the Philox block with counter ``j = 16 m + l``; outputs (0, 1) and
    (2, 3) are Box-Muller pairs ``r cos(theta), r sin(theta)`` with ``r = sqrt(-2 ln u)``,
    ``u = ((bits0 >> 1) + 1/2) 2^-31`` (the sum rounded to float32) and ``theta = q pi/2 + (f - 1/2) pi/2`` from the
    odd word's top 2 bits q and its low 30 bits as a float32 fraction f of 2^30."""
    blocks = -(-n // 64)
    j = np.arange(16 * blocks, dtype=np.uint64)
    counters = np.stack(
        [
            j & np.uint64(0xFFFFFFFF),
            j >> np.uint64(32),
            np.full_like(j, stream & 0xFFFFFFFF),
            np.full_like(j, stream >> 32),
        ],
        axis=1,
    )
    words = philox4x32_10_numpy(counters, (seed & 0xFFFFFFFF, seed >> 32))
    radius_words, angle_words = words[:, 0::2], words[:, 1::2]  # (16 blocks, 2): pairs (0, 1) and (2, 3)
    # u and f are rounded to float32 as the definition says (it matters where u is close to 1); the rest is exact
    u = ((radius_words >> 1).astype(np.float32) + np.float32(0.5)).astype(np.float64) * 2.0**-31
    radius = np.sqrt(-2.0 * np.log(u))
    quadrant = (angle_words >> 30).astype(np.float64)
    fraction = (angle_words & 0x3FFFFFFF).astype(np.float32).astype(np.float64) * 2.0**-30
    theta = quadrant * np.pi / 2 + (fraction - 0.5) * np.pi / 2
    normals = np.empty((16 * blocks, 4))
    normals[:, 0::2] = radius * np.cos(theta)
    normals[:, 1::2] = radius * np.sin(theta)
    # (block m, lane l, output k) -> element 64 m + 16 k + l
    return normals.reshape(blocks, 16, 4).transpose(0, 2, 1).reshape(-1)[:n]


def linear_sgd_philox_torch(
    w: torch.Tensor,
    b: torch.Tensor,
    samples: list[torch.Tensor],
    lr: float,
    target_weight: float = 3.0,
    target_bias: float = -2.0,
) -> torch.Tensor:
    """The write-up's epoch loop on given samples, in plain torch (in place on w, b; returns the squared errors):
    ``y = target_weight sum(x) + target_bias; e = dot(w, x) + b - y; w -= lr 2 e x; b -= lr 2 e``."""
    losses = []
    for x in samples:
        x = x.to(w.dtype)
        error = torch.dot(w, x) + b.reshape(()) - (target_weight * x.sum() + target_bias)
        losses.append(error**2)
        w -= lr * 2 * error * x
        b -= lr * 2 * error
    return torch.stack(losses)
