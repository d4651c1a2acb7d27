"""Backend selection: each backend is a table of the same ops (OP_NAMES); adding one is one `register_backend` call.

- ``"cpp"``: the compiled operators ``torch.ops.pykernels.<op>`` (CPU and, where built, CUDA kernels; the device
  follows the tensors).
- ``"numba"``: numba-JIT kernels registered as ``torch.ops.pykernels.numba_<op>`` (by :mod:`pykernels.numba.ops`;
  the kernels, and numba, load on their first call, so ``import pykernels`` does not import numba).
- ``"torch"``: the ops' definitions in plain torch (:mod:`pykernels.reference`), evaluated in float64 as the kernels
  compute, differentiated by torch autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import _checks, reference

OP_NAMES = ("poly", "poly_backward", "poly_mse", "dot", "dot_backward", "fit_poly", "poly_moments", "fit_poly_moments")


@dataclass(frozen=True)
class Backend:
    """One implementation of pykernels' ops (signatures as in ``csrc/ops.cpp``)."""

    name: str
    poly: Callable[..., torch.Tensor]
    poly_backward: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    poly_mse: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    dot: Callable[..., torch.Tensor]
    dot_backward: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    fit_poly: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    poly_moments: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    fit_poly_moments: Callable[..., tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def from_torch_ops(cls, name: str, prefix: str = "") -> Backend:
        """The backend whose ops are ``torch.ops.pykernels.<prefix><op>.default``."""
        namespace = torch.ops.pykernels
        return cls(name, **{op: getattr(namespace, prefix + op).default for op in OP_NAMES})


_LOADERS: dict[str, Callable[[], Backend]] = {}
_LOADED: dict[str, Backend] = {}


def register_backend(name: str, loader: Callable[[], Backend]) -> None:
    """Make ``backend=name`` available; ``loader`` builds the op table on first use."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {type(name).__name__} {name!r}")
    if not callable(loader):
        raise TypeError(f"loader must be a callable returning a Backend, got {type(loader).__name__}")
    _LOADERS[name] = loader
    _LOADED.pop(name, None)


def available_backends() -> tuple[str, ...]:
    return tuple(_LOADERS)


def get_backend(name: str) -> Backend:
    """The op table of backend ``name``; a ValueError lists the valid names."""
    backend = _LOADED.get(name) if isinstance(name, str) else None
    if backend is None:
        if not isinstance(name, str) or name not in _LOADERS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, sorted(_LOADERS)))}; got {name!r}")
        backend = _LOADERS[name]()
        if not isinstance(backend, Backend):
            raise TypeError(f"the loader of backend {name!r} must return a Backend, got {type(backend).__name__}")
        _LOADED[name] = backend
    return backend


def _checked(check: Callable[..., None], fn: Callable) -> Callable:
    def checked(*args):
        check(*args, allow_reduced=True)
        return fn(*args)

    checked.__name__ = checked.__qualname__ = fn.__name__
    checked.__doc__ = fn.__doc__
    return checked


def _in_float64(fn: Callable) -> Callable:
    """fn evaluated in float64 and rounded once to the inputs' dtype: the kernels' precision, so the reference's
    rounding, inf and NaN are theirs (a float32 formula can overflow in an intermediate where the kernels' float64
    math does not: a finite result, or -inf where float32 gives inf - inf = NaN)."""

    def wide(*args):
        dtype = args[0].dtype
        result = fn(*(arg.double() for arg in args))
        return tuple(t.to(dtype) for t in result) if isinstance(result, tuple) else result.to(dtype)

    wide.__name__ = wide.__qualname__ = fn.__name__
    wide.__doc__ = fn.__doc__
    return wide


def _torch_reference_backend() -> Backend:
    """The definitions in plain torch; fit_poly steps in the data's dtype, as the compiled fits do."""
    return Backend(
        "torch",
        poly=_checked(_checks.check_poly_inputs, _in_float64(reference.poly_torch)),
        poly_backward=_checked(_checks.check_poly_backward_inputs, _in_float64(reference.poly_backward_torch)),
        poly_mse=_checked(_checks.check_poly_mse_inputs, _in_float64(reference.poly_mse_torch)),
        dot=_checked(_checks.check_dot_inputs, _in_float64(reference.dot_torch)),
        dot_backward=_checked(_checks.check_dot_backward_inputs, _in_float64(reference.dot_backward_torch)),
        fit_poly=_checked(_checks.check_fit_poly_inputs, reference.fit_poly_torch),
        poly_moments=_checked(_checks.check_poly_moments_inputs, reference.poly_moments_torch),
        fit_poly_moments=_checked(_checks.check_fit_poly_moments_inputs, reference.fit_poly_moments_torch),
    )


register_backend("cpp", lambda: Backend.from_torch_ops("cpp"))
register_backend("torch", _torch_reference_backend)
