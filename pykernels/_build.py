"""How pykernels' compiled extension is built: one description for both ways of building it.

- At install (``setup.py``, when the build can import torch: ``pip install --no-build-isolation .``), as the
  extension module ``pykernels._C``.
- On first use (``pykernels._extension``, when no prebuilt extension matches the imported torch: a plain, isolated
  ``pip install .``, or a torch upgraded since), into a cache, with ``torch.utils.cpp_extension.load``.

Stdlib only at import: setup.py loads this file on its own, before it knows whether torch is there.

Environment switches (both ways):
    PYKERNELS_CUDA=0/1      force the CPU-only or the CUDA build. Default: the CUDA half too where torch is a CUDA
                            build, a CUDA toolkit (nvcc) of the same major version is found, and the cuBLAS/cuSPARSE/
                            cuSOLVER headers that torch's own headers include are found (in the toolkit, or in the
                            nvidia-* packages a CUDA torch from the package index brings); otherwise, or where the
                            CUDA half fails to compile, the CPU half alone, with a message that says why.
                            PYKERNELS_CUDA=1 makes any of these an error instead.
    CUDA_HOME               the CUDA toolkit (default: the one nvcc on PATH belongs to, even through a wrapper)
    PYKERNELS_CPU_ARCH=...  gcc's -march (default "native"; e.g. "x86-64-v3" for a portable build)
    PYKERNELS_DEBUG=1       -O0 -g instead of -O3
    TORCH_CUDA_ARCH_LIST    CUDA archs to compile for, e.g. "9.0" for H100/H200. Default: the visible GPU's arch;
                            with no GPU visible, PORTABLE_CUDA_ARCHS (machine code to Hopper, PTX beyond)
    MAX_JOBS                parallel compile jobs (lower it if the build runs out of memory)
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# Machine code for Turing, Ampere (and Ada, which runs sm_80 code) and Hopper, and Hopper's PTX, which the driver
# compiles for any later GPU (Blackwell and on) when the extension first loads there.
PORTABLE_CUDA_ARCHS = "7.5;8.0;9.0+PTX"


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str) -> bool | None:
    """A switch from the environment: None when unset or empty; 1/true/yes/on or 0/false/no/off (any case); anything
    else is a ValueError naming the variable (a typo must not silently mean "on")."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return None
    if value in _TRUE + _FALSE:
        return value in _TRUE
    raise ValueError(f"{name}={os.environ[name]!r}: use 1 (or true/yes/on) or 0 (or false/no/off)")


# The headers of CUDA's libraries that torch's ATen/cuda headers include: a CUDA toolkit may lack them (a minimal one,
# as here), and a CUDA torch from the package index brings them in its nvidia-* packages.
CUDA_LIBRARY_HEADERS = ("cublas_v2.h", "cusparse.h", "cusolverDn.h")


@dataclass(frozen=True)
class CudaPlan:
    """Whether to compile the CUDA half, and why (or why not); with what it needs to compile."""

    build: bool
    reason: str
    forced: bool = False  # PYKERNELS_CUDA=1: a CUDA half that cannot be built is an error, not a CPU-only build
    cuda_home: str | None = None
    include_dirs: tuple[str, ...] = field(default=())  # the library headers' folders outside the toolkit

    def without_cuda(self, reason: str) -> CudaPlan:
        return CudaPlan(build=False, reason=reason)


def plan_cuda(torch, cpp_extension) -> CudaPlan:
    """Decide whether to compile the CUDA half: see PYKERNELS_CUDA in this module's docstring. Raises RuntimeError
    where PYKERNELS_CUDA=1 asks for a CUDA half that cannot be built."""
    forced = env_flag("PYKERNELS_CUDA")
    if forced is False:
        return CudaPlan(False, "PYKERNELS_CUDA=0")
    problem = _cuda_problem(torch, cpp_extension)
    if isinstance(problem, str):
        if forced:
            raise RuntimeError(f"PYKERNELS_CUDA=1 asks for the CUDA kernels, but {problem}")
        return CudaPlan(False, f"{problem} (PYKERNELS_CUDA=0 says so quietly)")
    cuda_home, nvcc_release, include_dirs = problem
    reason = f"torch {torch.__version__} is a CUDA {torch.version.cuda} build and nvcc {nvcc_release} is in {cuda_home}"
    return CudaPlan(True, reason, bool(forced), cuda_home, include_dirs)


def _cuda_problem(torch, cpp_extension) -> str | tuple[str, str, tuple[str, ...]]:
    """Why the CUDA half cannot be compiled here, or (CUDA_HOME, nvcc's release, the library headers' folders)."""
    if not torch.version.cuda:
        kind = f"a ROCm ({torch.version.hip}) build" if getattr(torch.version, "hip", None) else "a CPU build"
        return f"torch {torch.__version__} is {kind}, so only the CPU kernels are compiled"
    chosen = _chosen_cuda_home()
    if chosen and not is_toolkit(chosen[1]):
        variable, value = chosen
        return (
            f"{variable}={value} is not a CUDA toolkit (no bin/nvcc and include/cuda_runtime.h there): the CUDA "
            f"kernels are not compiled (point {variable} at a toolkit, or unset it to use the nvcc on PATH)"
        )
    cuda_home = find_cuda_home(cpp_extension.CUDA_HOME)
    if cuda_home is None:
        return (
            f"torch {torch.__version__} is a CUDA build, but no CUDA toolkit (nvcc with its cuda_runtime.h) was "
            "found: the CUDA kernels are not compiled (set CUDA_HOME to a toolkit to compile them)"
        )
    torch_major = torch.version.cuda.split(".")[0]
    nvcc_release = _nvcc_release(cuda_home)
    if nvcc_release is None:
        return f"{cuda_home}/bin/nvcc does not say its release (nvcc --version): the CUDA kernels are not compiled"
    if nvcc_release.split(".")[0] != torch_major:
        return (
            f"nvcc in {cuda_home} is CUDA {nvcc_release}, but torch {torch.__version__} was built with CUDA "
            f"{torch.version.cuda}: the CUDA kernels are not compiled (set CUDA_HOME to a CUDA {torch_major}.x "
            "toolkit to compile them)"
        )
    toolkit_include = os.path.join(cuda_home, "include")
    include_dirs: list[str] = []
    missing = []
    candidates: list[str] | None = None  # the nvidia packages' folders, looked up once, only if the toolkit lacks one
    for header in CUDA_LIBRARY_HEADERS:
        if os.path.exists(os.path.join(toolkit_include, header)):
            continue
        candidates = nvidia_include_dirs(torch_major) if candidates is None else candidates
        found = next((d for d in candidates if os.path.exists(os.path.join(d, header))), None)
        if found is None:
            missing.append(header)
        elif found not in include_dirs:
            include_dirs.append(found)
    if missing:
        return (
            f"the CUDA toolkit in {cuda_home} lacks {', '.join(missing)} (which torch's CUDA headers include), and "
            "no nvidia-* package of torch's provides them: the CUDA kernels are not compiled (install the toolkit's "
            "cuBLAS/cuSPARSE/cuSOLVER development headers to compile them)"
        )
    return cuda_home, nvcc_release, tuple(include_dirs)


def is_toolkit(folder: str) -> bool:
    """A CUDA toolkit: bin/nvcc and include/cuda_runtime.h."""
    return os.path.isfile(os.path.join(folder, "bin", "nvcc")) and os.path.isfile(
        os.path.join(folder, "include", "cuda_runtime.h")
    )


def _chosen_cuda_home() -> tuple[str, str] | None:
    """(variable, value) of the first of CUDA_HOME and CUDA_PATH that is set, or None."""
    return next(((name, os.environ[name]) for name in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(name)), None)


def find_cuda_home(torch_guess: str | None) -> str | None:
    """The CUDA toolkit: CUDA_HOME (or CUDA_PATH) where set, else the folder of the nvcc on PATH (resolved through a
    wrapper script, which torch's own guess takes at face value), else torch's guess."""
    if chosen := _chosen_cuda_home():
        return os.path.realpath(chosen[1]) if is_toolkit(chosen[1]) else None
    nvcc = shutil.which("nvcc")
    for candidate in ([_nvcc_top(nvcc)] if nvcc else []) + [torch_guess]:
        if candidate and is_toolkit(candidate):
            return os.path.realpath(candidate)
    return None


def _nvcc_top(nvcc: str) -> str | None:
    """The toolkit folder nvcc itself reports (its TOP), which a wrapper script on PATH hides."""
    try:
        dryrun = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", dryrun.stdout + dryrun.stderr, re.MULTILINE)
    return match[1].strip() if match else os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def _nvcc_release(cuda_home: str) -> str | None:
    try:
        version = subprocess.run(
            [os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", version)
    return match[1] if match else None


def nvidia_include_dirs(cuda_major: str) -> list[str]:
    """Include folders of the nvidia-* packages of CUDA `cuda_major` (a CUDA torch's dependencies): nvidia/cu13/include
    for CUDA 13's, nvidia/<library>/include for CUDA 12's (a leftover of another major is never used)."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):  # (a stub "nvidia" module without a spec)
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for base in spec.submodule_search_locations:
        found += glob.glob(os.path.join(base, f"cu{cuda_major}", "include"))
        if cuda_major == "12":
            found += sorted(glob.glob(os.path.join(base, "cu[a-z]*", "include")))  # cublas, cusparse, cusolver, ...
    return list(dict.fromkeys(found))


@contextlib.contextmanager
def cuda_home_for_build(cpp_extension, cuda_home: str | None) -> Iterator[None]:
    """cpp_extension reads the toolkit from its module-level CUDA_HOME (its own guess, made at import); point it at
    the toolkit found for the build, for the build only."""
    if cuda_home is None:
        yield
        return
    saved = cpp_extension.CUDA_HOME
    cpp_extension.CUDA_HOME = cuda_home
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = saved


def first_compile_error(output: str) -> str:
    """The first line of compiler output that says what failed (for the one-line message of a CUDA half that did not
    compile)."""
    for line in output.splitlines():
        if line.startswith(("Error building extension", "Error compiling objects")):
            continue  # cpp_extension's own header (with ninja's first command line), not the compiler's message
        if re.search(r"\berror\b", line, re.IGNORECASE) and "ninja" not in line:
            return line.strip()[:300]
    return "no compiler error line found; PYKERNELS_CUDA=1 shows the compiler's output"


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
        return library_record_of(file, path.name)


def library_record_of(file: BinaryIO, name: str) -> dict[str, object]:
    """library_record of an open file (read from its start), named `name`."""
    digest = hashlib.file_digest(file, "sha256").hexdigest()
    return {"file": name, "size": os.fstat(file.fileno()).st_size, "sha256": digest}


def cpu_arch() -> str:
    return os.environ.get("PYKERNELS_CPU_ARCH", "native")


def debug() -> bool:
    return bool(env_flag("PYKERNELS_DEBUG"))


def cxx_flags() -> list[str]:
    # -fopenmp at compile time only: at::parallel_for is an inline OpenMP region, and leaving -fopenmp off the link
    # line makes it bind to the OpenMP runtime torch already loaded (so torch.set_num_threads applies).
    # No -ffast-math anywhere: it would delete the compensated sums. No contraction of products into FMAs: every
    # backend rounds each product, as torch does (csrc/common/poly_math.h says why; gram_cpu.cpp opts back in).
    flags = (["-O0", "-g"] if debug() else ["-O3"]) + ["-fopenmp", "-ffp-contract=off"]
    return flags + ([f"-march={cpu_arch()}"] if cpu_arch() else [])


def nvcc_flags(include_dirs: tuple[str, ...] = ()) -> list[str]:
    """nvcc's flags; the library headers' folders go last in the search (-isystem), after the toolkit's own."""
    flags = (["-O0", "-g"] if debug() else ["-O3"]) + ["-lineinfo"]
    return flags + [flag for folder in include_dirs for flag in ("-isystem", folder)]
