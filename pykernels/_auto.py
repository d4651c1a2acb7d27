"""How ``fit_poly(method="auto")`` chooses between stepping on the data and stepping on its sufficient statistics.

The math is written once, for NumPy arrays and torch tensors alike (``xp`` is ``numpy`` or ``torch``): eagerly it
runs in NumPy on the (D+1)^2 numbers (a microsecond per call where a torch call costs several), and under
torch.compile on tensors, where the choice becomes a ``torch.cond`` of the traced graph.

The bounds were measured (degrees 1-14; x on [-0.5, 0.5] to [0, 1000], [1, 2], [100, 101]; T up to 10^6 steps;
2,016 fits) against exact gradient descent in 150-digit arithmetic; none was exceeded.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import torch

GRAM_TOLERANCE = {torch.float32: 2.0**-24, torch.float64: 1e-10}
"""The largest relative error bound at which ``method="auto"`` keeps the statistics' iterates and losses: below
float32's rounding for float32 data; 10 significant digits for float64 data (where the data pass keeps ~14)."""

EPS64 = float(torch.finfo(torch.float64).eps)


def gram_is_faster(points: int, degree: int, steps: int) -> bool:
    """The data pass costs ``steps N (2D + 3)`` multiply-adds; the statistics ``N (3D + 3)`` once, then
    ``steps ((D+1)^2 + 2 (D+1))``."""
    data_cost = steps * points * (2 * degree + 3)
    gram_cost = points * (3 * degree + 3) + steps * ((degree + 1) ** 2 + 2 * (degree + 1))
    return gram_cost < data_cost


def gram_system(power_sums: Any, cross_sums: Any, square_sum: Any, xp: ModuleType) -> tuple[Any, Any, Any]:
    """``A[j, k] = power_sums[j + k] / N``, ``b = cross_sums / N``, ``s = square_sum / N`` (N = power_sums[..., 0])."""
    count = power_sums[..., :1]
    return gram_matrix(power_sums, cross_sums.shape[-1], xp), cross_sums / count, square_sum / count[..., 0]


def gram_matrix(power_sums: Any, terms: int, xp: ModuleType) -> Any:
    """``A[..., j, k] = power_sums[..., j + k] / N``: the windows of ``terms`` consecutive moments, a view. (Not a
    gather by an index tensor: advanced indexing inside torch.cond fails when AOTInductor compiles it.)"""
    moments = power_sums / power_sums[..., :1]
    if xp is torch:
        return moments.unfold(-1, terms, 1)
    return xp.lib.stride_tricks.sliding_window_view(moments, terms, axis=-1)


def within(bound: Any, tolerance: float) -> Any:
    """Per fit, whether its bound is at most the tolerance: the one comparison the eager and the traced choice make,
    so that a NaN bound (one the statistics cannot give: NaN sums) counts as too large in both."""
    return bound <= tolerance


def iterate_bound(gram: Any, lr: float, steps: int, xp: ModuleType, eps: float = EPS64) -> Any:
    """Per fit, a bound on the relative error of T = ``steps`` float64 steps on the statistics:
    ``0.5 eps_64 (kappa_eff + n_eff)`` with

        kappa_eff = lambda_max min(1 / lambda_min, 2 lr T)    n_eff = min(T, 1 / (2 lr lambda_min))

    for the eigenvalues of A. The sums are rounded once and that error acts at every step, so it grows with
    kappa_eff where the data pass's grows with its square root; directions of A that T steps do not move
    (``2 lr lambda T << 1``) do not count, which is why cond(A) itself is not the measure (1e128 at degree 14 on
    [100, 101], where the iterates were still exact to 1e-14). n_eff: the float64 update's own rounding, which the
    data pass has too. inf where A is not finite. (``eps``: a parameter so that a traced graph can hold it as a
    constant.)"""
    flat = gram.reshape(*gram.shape[:-2], -1)
    finite = xp.isfinite(flat).all(-1)
    eye = xp.eye(gram.shape[-1], dtype=xp.float64)
    eigenvalues = xp.linalg.eigvalsh(xp.where(finite[..., None, None], gram, eye))
    largest = eigenvalues[..., -1].clip(min=0.0)
    smallest = xp.maximum(eigenvalues[..., 0], eps * largest)  # rounding hides what lies below
    kappa = largest * (1.0 / smallest).clip(max=2.0 * lr * steps)  # lr = 0 or A = 0: nothing moves, nothing lost
    reach = (1.0 / (smallest * (2.0 * lr))).clip(max=float(steps))
    return xp.where(finite, 0.5 * eps * (kappa + reach), float("inf"))


def iterate_bound_ceiling(power_sums: Any, lr: float, steps: int, eps: float = EPS64) -> Any:
    """Per fit, an upper bound on :func:`iterate_bound` from the moments alone, in O(D) work:
    ``0.5 eps_64 (2 lr T trace(A) + T)``. A is a Gram matrix (positive semidefinite), so its largest eigenvalue is
    at most its trace, ``sum_j power_sums[2j] / N``; ``kappa_eff <= lambda_max 2 lr T`` and ``n_eff <= T``. Where
    the ceiling is within the tolerance, so is the bound, and no eigenvalue is needed. (The factor 1.001 covers the
    rounding of the eigenvalues' computation, ~1e-15 relative.) inf or NaN where the moments are not finite.
    ``power_sums``: an array, or a list of floats (one fit, without an array's per-call cost)."""
    if isinstance(power_sums, list):
        trace = sum(power_sums[::2]) / power_sums[0]
    else:
        trace = power_sums[..., ::2].sum(-1) / power_sums[..., 0]
    return 0.5 * eps * (2.0 * lr * steps * 1.001 * trace + steps)


def gram_diagonal(power_sums: Any, terms: int) -> Any:
    """``A[k, k] = power_sums[2k] / N`` (k = 0..D): the same numbers as the Hankel matrix's diagonal."""
    return power_sums[..., : 2 * terms - 1 : 2] / power_sums[..., :1]


def loss_bound(diagonal: Any, offset: Any, coeffs: Any, loss: Any, eps: float = EPS64) -> Any:
    """Per fit, a bound on the relative error of a loss computed from the statistics, ``c.A c - 2 c.b + s``: its
    terms are as large as ``M = (sqrt(s) + sum_k |c_k| sqrt(A_kk))^2`` and cancel down to the loss, so the rounding of
    the sums leaves ``eps_64 M / |loss|``. Large only for fits that are nearly exact (loss / s below ~1e-9).
    ``diagonal``: A's diagonal (:func:`gram_diagonal`), ``offset``: s.

    ``M = 0`` (every term zero: y = 0 from zero coefficients, a padding series) bounds the error by 0, whatever the
    loss: 0/0 would otherwise be NaN. A loss of 0 from terms that are not all zero is unresolved: inf."""
    xp = torch if isinstance(coeffs, torch.Tensor) else np
    weighted = abs(coeffs) * xp.sqrt(diagonal)
    total = weighted[..., 0]
    for k in range(1, weighted.shape[-1]):  # left to right, as the compiled kernel sums (NumPy's sum would pair them)
        total = total + weighted[..., k]
    scale = xp.sqrt(offset) + total
    moment = scale * scale
    return xp.where(moment == 0, 0.0, eps * moment / abs(loss))
