"""pykernels' numba backend: the same ops (poly, poly_backward, poly_mse, dot, dot_backward, fit_poly) as numba
kernels.

- ``pykernels.numba.cpu``: ``@njit(cache=True)`` kernels on NumPy arrays (``poly``, ``poly_backward``,
  ``poly_mse``, ``dot``, ``dot_backward``, ``fit_poly``): the NumPy-in/NumPy-out API for users without torch tensors.
- ``pykernels.numba.gpu``: ``numba.cuda`` kernels on anything with ``__cuda_array_interface__`` (torch CUDA
  tensors, numba device arrays); needs a GPU (or ``NUMBA_ENABLE_CUDASIM=1``) and is imported only when used. (Not
  named ``...numba.cuda``: numba-cuda's import hook redirects every module whose name contains ``numba.cuda`` and
  recursed forever on ours.)
- ``pykernels.numba.ops``: the torch custom ops ``torch.ops.pykernels.numba_<op>`` (what ``backend="numba"``
  calls), built from the C++ ops' schemas, with fake and autograd registrations.

Compiled kernels are cached on disk (numba's ``cache=True``; set ``NUMBA_CACHE_DIR`` where the package folder is
read-only). Nothing compiles at import; ``pykernels.numba.warmup()`` compiles ahead of time.
"""

from __future__ import annotations

from .ops import warmup

__all__ = ["warmup"]
