"""Build pykernels' compiled operators with torch.utils.cpp_extension (ninja).

The extension must be compiled against the torch it will run with, so build without isolation:

    pip install --no-build-isolation .

Environment switches:
    PYKERNELS_CUDA=0/1      force the CPU-only or the CUDA build (default: CUDA when torch has CUDA and
                            nvcc is found through CUDA_HOME)
    PYKERNELS_CPU_ARCH=...  value of gcc's -march (default "native"; e.g. "x86-64-v3" for a portable wheel)
    PYKERNELS_DEBUG=1       -O0 -g instead of -O3
    TORCH_CUDA_ARCH_LIST    CUDA archs to compile for, e.g. "9.0" for H100/H200. Default: the visible GPU's arch;
                            with no GPU visible, PORTABLE_CUDA_ARCHS (machine code to Hopper, PTX beyond)
    MAX_JOBS                parallel compile jobs (lower it if the build runs out of memory)
"""

from __future__ import annotations

import glob
import json
import os
import sys

from setuptools import setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - exercised by a build in a torch-less environment
    sys.exit(
        "pykernels: torch is not importable in the build environment. Install torch first, then build "
        "without isolation against it: pip install --no-build-isolation ."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")
# Machine code for Turing, Ampere (and Ada, which runs sm_80 code) and Hopper, and Hopper's PTX, which the driver
# compiles for any later GPU (Blackwell and on) when the extension first loads there.
PORTABLE_CUDA_ARCHS = "7.5;8.0;9.0+PTX"


def env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    return None if value is None or value == "" else value not in ("0", "false", "False", "no")


def want_cuda() -> bool:
    forced = env_flag("PYKERNELS_CUDA")
    if forced is not None:
        return forced
    return bool(torch.version.cuda) and cpp_extension.CUDA_HOME is not None


def build_extension():
    use_cuda = want_cuda()
    debug = bool(env_flag("PYKERNELS_DEBUG"))
    arch = os.environ.get("PYKERNELS_CPU_ARCH", "native")
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    # -fopenmp at compile time only: at::parallel_for is an inline OpenMP region, and leaving -fopenmp off the
    # link line makes it bind to the OpenMP runtime torch already loaded (so torch.set_num_threads applies).
    # No -ffast-math anywhere: it would delete the compensated sums.
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags.append("-fopenmp")  # (cpp_extension adds -DPy_LIMITED_API itself for py_limited_api=True)
    if arch:
        cxx_flags.append(f"-march={arch}")
    extra_compile_args = {"cxx": cxx_flags}
    extension = cpp_extension.CppExtension
    if use_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # the local GPU's arch where there is one (as torch would choose); else portable, not torch's default
            # (every arch its CUDA knows: slow to build)
            local = torch.cuda.is_available() and "{}.{}".format(*torch.cuda.get_device_capability())
            os.environ["TORCH_CUDA_ARCH_LIST"] = local or PORTABLE_CUDA_ARCHS
        extension = cpp_extension.CUDAExtension
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        extra_compile_args["nvcc"] = (["-O0", "-g"] if debug else ["-O3"]) + ["-lineinfo"]
    print(
        f"pykernels: building the {'CPU + CUDA' if use_cuda else 'CPU-only'} extension against torch "
        f"{torch.__version__}",
        file=sys.stderr,
    )
    ext = extension(
        "pykernels._C",
        sources,
        extra_compile_args=extra_compile_args,
        py_limited_api=True,
    )
    ext.pykernels_build_info = {
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "backends": ["cpu", "cuda"] if use_cuda else ["cpu"],
        "cuda_arch_list": os.environ["TORCH_CUDA_ARCH_LIST"] if use_cuda else None,
        "cpu_arch": arch,
        "debug": debug,
    }
    return ext


class BuildExtension(cpp_extension.BuildExtension):
    """cpp_extension's builder, which also records what the extension was built against."""

    def run(self):
        if not cpp_extension.is_ninja_available():
            print("pykernels: ninja not found, the build will be slow and serial (pip install ninja)", file=sys.stderr)
        super().run()
        for ext in self.extensions:
            info = getattr(ext, "pykernels_build_info", None)
            if info is None:
                continue
            target = os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), "_build_info.json")
            with open(target, "w") as f:
                json.dump(info, f, indent=2)


setup(
    ext_modules=[build_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
