"""pykernels: fused, hand-differentiated PyTorch kernels for small training loops.

    import pykernels
    loss, grad = pykernels.poly_mse(x, y, coeffs)      # one pass: loss and its coefficient gradient
    loss.backward()                                      # reuses grad; costs almost nothing

Ops: ``poly``, ``poly_mse``, ``dot`` (and ``torch.ops.pykernels.*`` incl. the backward ops), autograd
Functions ``PolyForward``, ``PolyMSE``, ``Dot``; backends ``"cpp"`` (default), ``"numba"``, ``"torch"``.
Fused loops: ``fit_poly`` (whole gradient-descent fits, batched; on the data or on its sufficient statistics,
``poly_moments`` and ``fit_poly_moments``), ``linear_sgd_step`` and ``linear_sgd_philox``
(the 10^7-weight problem, the latter drawing its samples in-kernel: ``philox_normal``).
"""

from __future__ import annotations

import warnings

import torch as _torch

from . import _support

if (_newer_torch := _support.check_torch(_torch.__version__)) is not None:
    warnings.warn(_newer_torch, stacklevel=2)

from . import _extension

_BUILD_INFO = _extension.load()

from . import _meta, _vmap, reference  # noqa: E402
from ._backends import available_backends, get_backend, register_backend  # noqa: E402
from ._info import build_info  # noqa: E402
from .autograd import Dot, PolyForward, PolyMSE  # noqa: E402
from .numba import ops as _numba_ops  # noqa: E402, F401  (registers the numba ops' kernels; imports no numba)
from .ops import (  # noqa: E402
    FitResult,
    PolyMoments,
    PolyMSEResult,
    choose_fit_method,
    dot,
    fit_poly,
    fit_poly_moments,
    linear_sgd_philox,
    linear_sgd_step,
    philox_normal,
    poly,
    poly_moments,
    poly_mse,
)

# The compiled ops' autograd kernels are registered in C++ (csrc/autograd.cpp); their fake kernels and vmap rules
# here.
_meta.register_fake_kernels()
_vmap.register_vmap_rules()
# The built-in backends' op tables exist from the start: the first call under torch.compile finds them as every
# later call does (no side effect to trace, no recompile).
for _backend in available_backends():
    get_backend(_backend)

__version__ = "0.1.0"

__all__ = [
    "Dot",
    "FitResult",
    "PolyForward",
    "PolyMSE",
    "PolyMSEResult",
    "PolyMoments",
    "available_backends",
    "build_info",
    "choose_fit_method",
    "dot",
    "fit_poly",
    "fit_poly_moments",
    "get_backend",
    "linear_sgd_philox",
    "linear_sgd_step",
    "philox_normal",
    "poly",
    "poly_moments",
    "poly_mse",
    "reference",
    "register_backend",
]
