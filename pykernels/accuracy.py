"""Accuracy against exact rational arithmetic: the errors of ``dot`` and ``poly_mse``, in units in the last place.

The exact value of a float expression is computed with :class:`fractions.Fraction` (every float is a rational), so
the error of a result ``r`` of dtype T is ``|r - exact| / ulp_T(exact)``: 0.5 or less is correctly rounded.
Ill-conditioned dot products come from Ogita, Rump and Oishi's generator (GenDot, "Accurate sum and dot product",
SIAM J. Sci. Comput. 26, 2005, Algorithm 6.1), whose condition number ``2 sum|a_i b_i| / |sum a_i b_i|`` is chosen.
Used by the accuracy tests, the asv ``track_`` benchmarks and the study.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch


def exact_dot(a: torch.Tensor, b: torch.Tensor) -> Fraction:
    """sum_i a_i b_i, exactly."""
    pairs = zip(a.double().tolist(), b.double().tolist(), strict=True)
    return sum((Fraction(p) * Fraction(q) for p, q in pairs), Fraction(0))


def exact_poly_mse(x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor) -> tuple[Fraction, list[Fraction]]:
    """loss = 1/N sum r_i^2 and grad_k = 2/N sum r_i x_i^k, r_i = sum_k c_k x_i^k - y_i, exactly."""
    cs = [Fraction(c) for c in coeffs.double().tolist()]
    loss, grad = Fraction(0), [Fraction(0)] * len(cs)
    for xi, yi in zip(x.double().tolist(), y.double().tolist(), strict=True):
        powers = [Fraction(xi) ** k for k in range(len(cs))]
        residual = sum((c * p for c, p in zip(cs, powers, strict=True)), Fraction(0)) - Fraction(yi)
        loss += residual * residual
        grad = [g + residual * p for g, p in zip(grad, powers, strict=True)]
    n = x.numel()
    return loss / n, [2 * g / n for g in grad]


def ulp_error(value: float | torch.Tensor, exact: Fraction, dtype: torch.dtype) -> float:
    """|value - exact| in units of the last place of `exact` rounded to `dtype` (inf where value is not finite)."""
    value = float(value)
    if not math.isfinite(value):
        return math.inf
    rounded = np.array(float(exact), dtype=np.float64 if dtype == torch.float64 else np.float32)
    ulp = float(np.spacing(np.abs(rounded)))
    return float(abs(Fraction(value) - exact) / Fraction(ulp))


def condition_number(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 sum|a_i b_i| / |sum a_i b_i| (inf for an exact zero)."""
    exact = exact_dot(a, b)
    magnitude = exact_dot(a.abs(), b.abs())
    return math.inf if exact == 0 else float(2 * magnitude / abs(exact))


def ill_conditioned_dot(
    n: int, condition: float, dtype: torch.dtype, generator: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """a, b (n >= 6, of `dtype`) whose dot product has about the given condition number (GenDot): the first half
    spans exponents up to log2(condition) / 2, the second half cancels the running exact sum down to ever smaller
    exponents, then the pairs are shuffled."""
    float_type = np.float64 if dtype == torch.float64 else np.float32
    half = n // 2
    exponent_range = math.log2(condition)
    exponents = np.rint(generator.random(half) * exponent_range / 2)
    exponents[0], exponents[-1] = np.rint(exponent_range / 2) + 1, 0
    a = np.zeros(n, float_type)
    b = np.zeros(n, float_type)
    a[:half] = ((2 * generator.random(half) - 1) * 2.0**exponents).astype(float_type)
    b[:half] = ((2 * generator.random(half) - 1) * 2.0**exponents).astype(float_type)
    running = exact_dot(torch.from_numpy(a[:half]), torch.from_numpy(b[:half]))
    for i, exponent in zip(range(half, n), np.rint(np.linspace(exponent_range / 2, 0, n - half)), strict=True):
        a[i] = float_type((2 * generator.random() - 1) * 2.0**exponent)
        b[i] = float_type(((2 * generator.random() - 1) * 2.0**exponent - float(running)) / float(a[i]))
        running += Fraction(float(a[i])) * Fraction(float(b[i]))
    order = generator.permutation(n)
    return torch.from_numpy(a[order].copy()), torch.from_numpy(b[order].copy())


def near_fit(
    n: int, degree: int, dtype: torch.dtype, generator: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An ill-conditioned poly_mse: y = p(x) rounded to `dtype`, so the residuals are rounding errors, many orders of
    magnitude below the terms p(x) is made of; x uniform in [0, 5], coefficients of alternating size."""
    float_type = np.float64 if dtype == torch.float64 else np.float32
    x = (generator.random(n) * 5).astype(float_type)
    coeffs = (generator.standard_normal(degree + 1) * 10.0 ** -np.arange(degree + 1)).astype(float_type)
    exact = np.polynomial.polynomial.polyval(x.astype(np.float64), coeffs.astype(np.float64))
    return torch.from_numpy(x), torch.from_numpy(exact.astype(float_type)), torch.from_numpy(coeffs)


def random_dot(n: int, dtype: torch.dtype, generator: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normal a, b of `dtype` (condition number about sqrt(n))."""
    return tuple(torch.from_numpy(generator.standard_normal(n)).to(dtype) for _ in range(2))


def random_fit(
    n: int, degree: int, dtype: torch.dtype, generator: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seed's data at random points: x uniform in [0, 5], y = sin x, random coefficients."""
    x = torch.from_numpy(generator.random(n) * 5).to(dtype)
    return x, torch.sin(x), torch.from_numpy(generator.standard_normal(degree + 1) * 0.1).to(dtype)


def dot_errors(dot: Callable, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """dot's error in ulps on each (a, b)."""
    return [ulp_error(dot(a, b), exact_dot(a, b), a.dtype) for a, b in pairs]


def poly_mse_errors(poly_mse: Callable, problems: list[tuple[torch.Tensor, ...]]) -> list[float]:
    """poly_mse's worst error in ulps (over the loss and every gradient component) on each (x, y, coeffs)."""
    errors = []
    for x, y, coeffs in problems:
        loss, grad = poly_mse(x, y, coeffs)
        exact_loss, exact_grad = exact_poly_mse(x, y, coeffs)
        parts = [ulp_error(loss, exact_loss, x.dtype)]
        parts += [ulp_error(g, e, x.dtype) for g, e in zip(grad.tolist(), exact_grad, strict=True)]
        errors.append(max(parts))
    return errors
