"""``pykernels.build_info()``: what this installation was built with and what it can run."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from . import _extension


def _numba_info() -> dict[str, Any]:
    if importlib.util.find_spec("numba") is None:
        return {"installed": False}
    import numba

    from .numba import _cache

    try:
        layer = numba.threading_layer()
    except ValueError:  # numba picks its layer when the first parallel kernel runs
        layer = f"not chosen yet (NUMBA_THREADING_LAYER={numba.config.THREADING_LAYER})"
    try:
        from numba import cuda

        cuda_usable = bool(cuda.is_available())
    except Exception:
        cuda_usable = False
    return {
        "installed": True,
        "version": numba.__version__,
        "threading_layer": layer,
        "threads": numba.config.NUMBA_NUM_THREADS,
        "cache_dir": _cache.cache_dir(),
        "cuda_usable": cuda_usable,
        "cuda_simulator": os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
    }


def _own_version() -> str:
    """The installed distribution's version, or the source tree's where pykernels runs uninstalled (a checkout on
    PYTHONPATH, an in-place build), which has no distribution metadata."""
    try:
        return importlib.metadata.version("pykernels")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

        return f"{__version__} (not installed: {Path(__file__).parent})"


def build_info() -> dict[str, Any]:
    """The torch and CUDA versions the extension was built against (at install, or on first use into the cache),
    its compiled backends (the CUDA half: built or not, and why) and CUDA archs, the running torch, and numba's
    version, threading layer, cache folder and CUDA availability."""
    built = _extension.LOADED
    return {
        "pykernels": _own_version(),
        "extension": built.get("source"),
        "cache_dir": str(_extension.cache_dir()),
        "built_with_torch": built.get("torch_version"),
        "built_with_cuda": built.get("torch_cuda_version"),
        "compiled_backends": built.get("backends", []),
        "cuda_kernels": ("built: " if "cuda" in built.get("backends", []) else "not built: ")
        + built.get("cuda_reason", "the build recorded no reason (built by an older pykernels)"),
        "cuda_arch_list": built.get("cuda_arch_list"),
        "cpu_arch": built.get("cpu_arch"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch_threads": torch.get_num_threads(),
        "numba": _numba_info(),
    }
