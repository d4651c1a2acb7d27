"""Argument validation for the Python backends and the fake kernels.

The messages are the same as those of the C++ checks (csrc/checks.h): whichever backend runs, a bad argument
is reported by name, with what was expected, before any kernel runs.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable

import torch
from torch.fx.experimental.symbolic_shapes import guard_scalar

_FLOATING = (torch.float32, torch.float64)
_REDUCED = (torch.float16, torch.bfloat16)


def shape_text(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_tensor(t: object, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_floating(t: torch.Tensor, name: str, allow_reduced: bool = False) -> None:
    check_tensor(t, name)
    if t.dtype in _FLOATING or (allow_reduced and t.dtype in _REDUCED):
        return
    expected = "float32 or float64" + (", float16 or bfloat16" if allow_reduced else "")
    raise TypeError(f"{name} must be a floating-point tensor ({expected}), got {t.dtype}")


def check_same_dtype_and_device(*named: tuple[torch.Tensor, str]) -> None:
    first, first_name = named[0]
    for other, name in named[1:]:
        check_tensor(other, name)
        if other.dtype != first.dtype:
            raise TypeError(f"{name} must have the same dtype as {first_name} ({first.dtype}), got {other.dtype}")
        if other.device != first.device:
            raise RuntimeError(
                f"{name} must be on the same device as {first_name} ({first.device}), got {other.device}"
            )


def check_not_empty(t: torch.Tensor, name: str) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {shape_text(t)}")


def check_same_shape(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{b_name} must have the same shape as {a_name} {shape_text(a)}, got {shape_text(b)}")


def check_scalar(t: torch.Tensor, name: str) -> None:
    if t.numel() != 1:
        raise ValueError(f"{name} must hold a single value (0-d), got shape {shape_text(t)}")


def check_poly_inputs(
    x: torch.Tensor, coeffs: torch.Tensor, allow_reduced: bool = False, allow_empty: bool = False
) -> None:
    """x: any shape, non-empty (the kernels'; the public poly takes an empty x too); coeffs: (D+1,), same dtype
    and device."""
    check_floating(x, "x", allow_reduced)
    check_same_dtype_and_device((x, "x"), (coeffs, "coeffs"))
    if coeffs.dim() != 1 or coeffs.numel() == 0:
        raise ValueError(
            "coeffs must be 1-D with at least one coefficient (degree + 1 entries), got shape " + shape_text(coeffs)
        )
    if not allow_empty:
        check_not_empty(x, "x")


def check_poly_backward_inputs(
    grad_y: torch.Tensor, x: torch.Tensor, coeffs: torch.Tensor, allow_reduced: bool = False
) -> None:
    check_poly_inputs(x, coeffs, allow_reduced)
    check_same_dtype_and_device((x, "x"), (grad_y, "grad_y"))
    check_same_shape(x, "x", grad_y, "grad_y")


def check_poly_mse_inputs(x: torch.Tensor, y: torch.Tensor, coeffs: torch.Tensor, allow_reduced: bool = False) -> None:
    check_poly_inputs(x, coeffs, allow_reduced)
    check_same_dtype_and_device((x, "x"), (y, "y"))
    check_same_shape(x, "x", y, "y")


def check_dot_inputs(a: torch.Tensor, b: torch.Tensor, allow_reduced: bool = False) -> None:
    """a, b: 1-D, same length, non-empty, same dtype and device."""
    check_floating(a, "a", allow_reduced)
    check_same_dtype_and_device((a, "a"), (b, "b"))
    if a.dim() != 1:
        raise ValueError(f"a must be 1-D, got shape {shape_text(a)}")
    if b.dim() != 1:
        raise ValueError(f"b must be 1-D, got shape {shape_text(b)}")
    if a.numel() != b.numel():
        raise ValueError(f"a and b must have the same length, got {a.numel()} and {b.numel()}")
    check_not_empty(a, "a")


def check_dot_backward_inputs(
    grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, allow_reduced: bool = False
) -> None:
    check_dot_inputs(a, b, allow_reduced)
    check_same_dtype_and_device((a, "a"), (grad, "grad"))
    check_scalar(grad, "grad")


def check_fit_poly_inputs(
    x: torch.Tensor,
    y: torch.Tensor,
    coeffs: torch.Tensor,
    lr: float,
    steps: int,
    record_every: int,
    allow_reduced: bool = False,
) -> None:
    """y (N,) or (B, N); x (N,) or y's shape; coeffs (D+1,) or (B, D+1); steps >= 0; record_every >= 1."""
    check_fit_data(x, y, allow_reduced)
    check_same_dtype_and_device((x, "x"), (coeffs, "coeffs"))
    if not (
        coeffs.dim() >= 1
        and coeffs.shape[-1] > 0
        and (coeffs.dim() == 1 or (y.dim() == 2 and coeffs.dim() == 2 and coeffs.shape[0] == y.shape[0]))
    ):
        raise ValueError(f"coeffs must be (D+1,) or (B, D+1) with B = y.shape[0], got {shape_text(coeffs)}")
    check_fit_steps(steps, record_every)


def check_fit_data(x: torch.Tensor, y: torch.Tensor, allow_reduced: bool = False) -> None:
    """y (N,) or (B, N), non-empty; x (N,) shared or y's shape; same dtype and device."""
    check_floating(x, "x", allow_reduced)
    check_same_dtype_and_device((x, "x"), (y, "y"))
    if y.dim() not in (1, 2):
        raise ValueError(f"y must be 1-D (N,) or 2-D (B, N) for B fits, got shape {shape_text(y)}")
    check_not_empty(y, "y")
    if not (x.dim() >= 1 and x.shape[-1] == y.shape[-1] and (x.dim() == 1 or x.shape == y.shape)):
        raise ValueError(f"x must have shape (N,) or the shape of y {shape_text(y)}, got {shape_text(x)}")


def check_fit_steps(steps: int, record_every: int) -> None:
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if record_every < 1:
        raise ValueError(f"record_every must be >= 1, got {record_every}")


def check_init(init: torch.Tensor, data: torch.Tensor, terms: int, data_name: str) -> None:
    """fit_poly's and fit_poly_moments' initial coefficients, checked (and named) before the kernel calls them
    coeffs: (terms,), or (B, terms) where ``data`` (y or cross_sums, already checked) is (B, ...); float32 or
    float64 on data's device; for fit_poly (data y) data's dtype as well."""
    check_tensor(init, "init")
    if init.dtype not in _FLOATING:
        raise TypeError(f"init must be a floating-point tensor (float32 or float64), got {init.dtype}")
    if data_name == "y" and init.dtype != data.dtype:
        raise TypeError(f"init must have the dtype of x and y ({data.dtype}), got {init.dtype}")
    batched = data.dim() == 2
    size = f"{data_name}.shape[-1] = {terms}" if data_name == "cross_sums" else f"{terms}"
    if not (init.dim() == 1 or (batched and init.dim() == 2 and init.shape[0] == data.shape[0])) or (
        init.shape[-1] != terms
    ):
        batch = (
            f" and B = {data_name}.shape[0] = {data.shape[0]}"
            if batched
            else f" (a batch (B, degree + 1) only where {data_name} is batched; it is 1-D)"
        )
        expected = f"(degree + 1,) or (B, degree + 1) with degree + 1 = {size}{batch}"
        raise ValueError(f"init must have shape {expected}, got {shape_text(init)}")
    if init.device != data.device:
        raise RuntimeError(f"init must be on the same device as {data_name} ({data.device}), got {init.device}")


MAX_MOMENTS_DEGREE = 2**62 - 1  # 2D + 1 sums must count in int64


def check_poly_moments_inputs(x: torch.Tensor, y: torch.Tensor, degree: int, allow_reduced: bool = False) -> None:
    """The data as for fit_poly; 0 <= degree < 2^62."""
    check_fit_data(x, y, allow_reduced)
    if not 0 <= degree <= MAX_MOMENTS_DEGREE:
        raise ValueError(f"degree must be in [0, 2^62), got {degree}")


def check_fit_poly_moments_inputs(
    power_sums: torch.Tensor,
    cross_sums: torch.Tensor,
    square_sum: torch.Tensor,
    coeffs: torch.Tensor,
    lr: float,
    steps: int,
    record_every: int,
    allow_reduced: bool = False,
) -> None:
    """float64 sums shaped as poly_moments returns them for D = coeffs.shape[-1] - 1, batched (B leading) when
    cross_sums is 2-D; coeffs (D+1,) or (B, D+1), float32 or float64, on the sums' device."""
    check_tensor(coeffs, "coeffs")
    for sums, name in ((power_sums, "power_sums"), (cross_sums, "cross_sums"), (square_sum, "square_sum")):
        check_tensor(sums, name)
        if sums.dtype != torch.float64:
            raise TypeError(f"{name} must be a float64 tensor (as poly_moments returns it), got {sums.dtype}")
        if sums.device != coeffs.device:
            raise RuntimeError(f"{name} must be on the same device as coeffs ({coeffs.device}), got {sums.device}")
    check_floating(coeffs, "coeffs")
    if not (1 <= coeffs.dim() <= 2 and coeffs.shape[-1] > 0):
        raise ValueError(f"coeffs must be (D+1,) or (B, D+1), got {shape_text(coeffs)}")
    terms = coeffs.shape[-1]
    if cross_sums.dim() not in (1, 2) or cross_sums.shape[-1] != terms:
        raise ValueError(
            f"cross_sums must be (D+1,) or (B, D+1) with D+1 = coeffs.shape[-1] = {terms}, got {shape_text(cross_sums)}"
        )
    batched = cross_sums.dim() == 2
    series = cross_sums.shape[0] if batched else 1
    if not (coeffs.dim() == 1 or (batched and coeffs.shape[0] == series)):
        raise ValueError(f"coeffs must be (D+1,) or (B, D+1) with B = cross_sums.shape[0], got {shape_text(coeffs)}")
    if not (
        (power_sums.dim() == 1 or (batched and power_sums.dim() == 2 and power_sums.shape[0] == series))
        and power_sums.shape[-1] == 2 * terms - 1
    ):
        raise ValueError(
            f"power_sums must be (2D+1,) or (B, 2D+1) with 2D+1 = {2 * terms - 1}, got {shape_text(power_sums)}"
        )
    if square_sum.shape != ((series,) if batched else ()):
        expected = "(B,) with B = cross_sums.shape[0]" if batched else "0-d"
        raise ValueError(f"square_sum must be {expected}, got shape {shape_text(square_sum)}")
    check_fit_steps(steps, record_every)


def check_philox_args(seed: int, stream: int) -> None:
    """The raw ops' seed is any int64 (a 64-bit key's bit pattern); streams are counters in [0, 2^63)."""
    if stream < 0:
        raise ValueError(f"stream must be in [0, 2^63), got {stream}")


# --- Python arguments of the public functions ----------------------------------------------------------------------
# They are checked on every route. Eagerly, and under torch.compile and torch.export where a number is a constant,
# the checks below simply run (at trace time). Where torch.compile makes a number symbolic (dynamic=True, or a value
# that changed between calls), each comparison below becomes a guard of the compiled graph: a later value that fails
# it retraces, and the retrace raises. So the checks are written as comparisons (NaN and +-inf fail them: a symbolic
# float's ``x < inf`` would simplify to True) and turn a symbolic value into a constant only on the way to raising,
# for the message (an f-string of a symbolic number does not trace). Under fullgraph=True dynamo reports the
# exception as "Observed exception ... raised exception ValueError('lr must be ...')", as it reports torch's own
# argument errors (F.dropout's p).

INT64_MAX = 2**63 - 1
FLOAT_MAX = sys.float_info.max


def _concrete(value: object) -> object:
    """value as a plain number for a message (under torch.compile a symbolic one is specialized: we are raising)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return guard_scalar(value)


def _real_text(value: object) -> str:
    """repr of value as a float (an integer beyond the float range reads inf, as float() would make it)."""
    value = _concrete(value)
    try:
        return repr(float(value))
    except OverflowError:
        return "inf" if value > 0 else "-inf"


def _described(value: object) -> str:
    """The value's type and, for anything but a tensor or an array (never echoed whole), its repr."""
    if isinstance(value, (int, float)):  # bool included; and no getattr on a symbolic number (it does not trace)
        return f"{type(value).__name__} {_concrete(value)!r}"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {list(shape)}"
    return f"{type(value).__name__} {_concrete(value)!r}"


def integer(
    value: object, name: str, minimum: int = 0, maximum: int = INT64_MAX, bounds: str | Callable[[], str] = ""
) -> int:
    """value as an int in [minimum, maximum], or a TypeError/ValueError naming it: no silent truncation of 2.7,
    no bools. ``bounds`` words the range for the message (default: from minimum and maximum); a callable words it
    only when raising (where it quotes a number that may be symbolic)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {_described(value)}")
    if not minimum <= value <= maximum:
        value = _concrete(value)
        bounds = bounds() if callable(bounds) else bounds
        if not bounds:
            largest = {INT64_MAX: "2^63 - 1", INT64_MAX - 1: "2^63 - 2"}.get(maximum, str(maximum))
            bounds = f">= {minimum}" if value < minimum else f"<= {largest}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    # int() of a symbolic int would specialize it; numpy's integers (eagerly) become Python ints for the schemas
    return value if torch.compiler.is_compiling() else int(value)


def real(value: object, name: str, minimum: float | None = None) -> float:
    """value as a finite float, or a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_described(value)}")
    if not torch.compiler.is_compiling():  # float() of a symbolic float would specialize it
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            value = math.inf
    # comparisons, not math.isfinite: they hold as guards where the value is symbolic (and are False for NaN)
    if not ((-FLOAT_MAX if minimum is None else minimum) <= value <= FLOAT_MAX):
        bound = f" and >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be finite{bound}, got {_real_text(value)}")
    return value


def tensor(value: object, name: str) -> torch.Tensor:
    """value, which must be a dense (strided) tensor: sparse and nested layouts have no kernels here."""
    check_tensor(value, name)
    if value.layout != torch.strided or value.is_nested:
        layout = "nested" if value.is_nested else str(value.layout).removeprefix("torch.")
        raise TypeError(f"{name} must be a dense (strided) tensor, got a {layout} tensor")
    return value


def optional_tensor(value: object, name: str) -> torch.Tensor | None:
    return None if value is None else tensor(value, name)


def seed(value: object, name: str = "seed") -> int:
    """A 64-bit Philox key in [0, 2^64), as the int64 bit pattern the ops' schemas carry (on every route: a
    constant above 2^63 - 1 travels through a compiled graph as its negative bit pattern)."""
    value = integer(value, name, 0, 2**64 - 1, bounds="in [0, 2^64)")
    return value - 2**64 if value > INT64_MAX else value


def stream(value: object, name: str, count: int = 1) -> int:
    """The first of ``count`` consecutive Philox streams (counters), all in [0, 2^63)."""

    def bounds() -> str:
        streams = _concrete(count)
        if streams == 1:
            return "in [0, 2^63)"
        return f"in [0, 2^63 - {streams}] (the {streams} streams from it stay below 2^63)"

    return integer(value, name, 0, 2**63 - count, bounds=bounds)
