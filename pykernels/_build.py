"""How pykernels' compiled extension is built: one description for both ways of building it.

- At install (``setup.py``, when the build can import torch: ``pip install --no-build-isolation .``), as the
  extension module ``pykernels._C``.
- On first use (``pykernels._extension``, when no prebuilt extension matches the imported torch: a plain, isolated
  ``pip install .``, or a torch upgraded since), into a cache, with ``torch.utils.cpp_extension.load``.

Stdlib only at import: setup.py loads this file on its own, before it knows whether torch is there.

Environment switches (both ways):
    PYKERNELS_CUDA=0/1      force the CPU-only or the CUDA build (default: CUDA when torch has CUDA and nvcc is found
                            through CUDA_HOME)
    PYKERNELS_CPU_ARCH=...  gcc's -march (default "native"; e.g. "x86-64-v3" for a portable build)
    PYKERNELS_DEBUG=1       -O0 -g instead of -O3
    TORCH_CUDA_ARCH_LIST    CUDA archs to compile for, e.g. "9.0" for H100/H200. Default: the visible GPU's arch;
                            with no GPU visible, PORTABLE_CUDA_ARCHS (machine code to Hopper, PTX beyond)
    MAX_JOBS                parallel compile jobs (lower it if the build runs out of memory)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Machine code for Turing, Ampere (and Ada, which runs sm_80 code) and Hopper, and Hopper's PTX, which the driver
# compiles for any later GPU (Blackwell and on) when the extension first loads there.
PORTABLE_CUDA_ARCHS = "7.5;8.0;9.0+PTX"


def env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    return None if value is None or value == "" else value not in ("0", "false", "False", "no")


def want_cuda(torch, cpp_extension) -> bool:
    forced = env_flag("PYKERNELS_CUDA")
    if forced is not None:
        return forced
    return bool(torch.version.cuda) and cpp_extension.CUDA_HOME is not None


def cuda_arch_list(torch) -> str:
    """TORCH_CUDA_ARCH_LIST, or the default: the local GPU's arch where there is one (as torch would choose), else
    the portable list (not torch's default, every arch its CUDA knows: slow to build)."""
    chosen = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if chosen:
        return chosen
    if torch.cuda.is_available():
        return "{}.{}".format(*torch.cuda.get_device_capability())
    return PORTABLE_CUDA_ARCHS


def sources(csrc: Path, use_cuda: bool) -> list[Path]:
    """The translation units: csrc/*.cpp and csrc/cpu/*.cpp, and csrc/cuda/*.cu for the CUDA build."""
    found = sorted(csrc.glob("*.cpp")) + sorted((csrc / "cpu").glob("*.cpp"))
    return found + (sorted((csrc / "cuda").glob("*.cu")) if use_cuda else [])


def sources_digest(csrc: Path) -> str:
    """A hash of every file under csrc (sources and headers, with their paths): a build is stale when it changes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in csrc.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(csrc)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def library_record(path: Path) -> dict[str, object]:
    """A compiled library's file name, size and sha256: recorded when it is built (setup.py's _build_info.json, a
    cache entry's complete.json) and checked before it is loaded, because loading a library cut short (a full disk,
    an interrupted copy) kills the process with SIGBUS and no message."""
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        size = os.fstat(file.fileno()).st_size
    return {"file": path.name, "size": size, "sha256": digest}


def cpu_arch() -> str:
    return os.environ.get("PYKERNELS_CPU_ARCH", "native")


def debug() -> bool:
    return bool(env_flag("PYKERNELS_DEBUG"))


def cxx_flags() -> list[str]:
    # -fopenmp at compile time only: at::parallel_for is an inline OpenMP region, and leaving -fopenmp off the link
    # line makes it bind to the OpenMP runtime torch already loaded (so torch.set_num_threads applies).
    # No -ffast-math anywhere: it would delete the compensated sums.
    flags = (["-O0", "-g"] if debug() else ["-O3"]) + ["-fopenmp"]
    return flags + ([f"-march={cpu_arch()}"] if cpu_arch() else [])


def nvcc_flags() -> list[str]:
    return (["-O0", "-g"] if debug() else ["-O3"]) + ["-lineinfo"]
