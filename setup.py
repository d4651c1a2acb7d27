"""Build pykernels with torch.utils.cpp_extension (ninja).

    pip install .                       # the kernels compile on first import, against the torch that is imported
    pip install --no-build-isolation .  # the kernels compile now, against the torch of this environment

A plain (isolated) build cannot see the environment's torch, so it installs the C++/CUDA sources with the package
(pykernels/_csrc) and compiles nothing; pykernels then compiles its kernels the first time it is imported, into a
cache (see pykernels/_extension.py). Without build isolation, the build compiles the extension module
pykernels._C against the environment's torch, as it did before. The build switches are in pykernels/_build.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"


def load_alone(name: str):
    """pykernels/<name>.py alone (importing the package would import torch and the extension)."""
    spec = importlib.util.spec_from_file_location(f"pykernels_{name.strip('_')}", ROOT / "pykernels" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


build = load_alone("_build")
support = load_alone("_support")

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # an isolated build: the kernels compile on first import instead
    torch = cpp_extension = None


class BuildPy(build_py):
    """Installs the C++/CUDA sources with the package (pykernels/_csrc), for the build on first import."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "pykernels" / "_csrc"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ROOT / CSRC, target)
        if torch is None:  # no extension in this build: a record left by an earlier in-place build would be false
            (Path(self.build_lib) / "pykernels" / "_build_info.json").unlink(missing_ok=True)


def build_extension(plan: build.CudaPlan) -> cpp_extension.CppExtension:
    """The extension module pykernels._C, with the CUDA half where `plan` says so."""
    sources = [str(path.relative_to(ROOT)) for path in build.sources(ROOT / CSRC, plan.build)]
    extra_compile_args = {"cxx": build.cxx_flags()}  # (cpp_extension adds -DPy_LIMITED_API for py_limited_api=True)
    extension = cpp_extension.CppExtension
    if plan.build:
        os.environ["TORCH_CUDA_ARCH_LIST"] = build.cuda_arch_list(torch)
        extension = cpp_extension.CUDAExtension
        extra_compile_args["nvcc"] = build.nvcc_flags(plan.include_dirs)
    print(
        f"pykernels: building the {'CPU + CUDA' if plan.build else 'CPU-only'} extension against torch "
        f"{torch.__version__}: {plan.reason}",
        file=sys.stderr,
    )
    with build.cuda_home_for_build(cpp_extension, plan.cuda_home):  # CUDAExtension reads the toolkit's folders
        ext = extension("pykernels._C", sources, extra_compile_args=extra_compile_args, py_limited_api=True)
    ext.pykernels_plan = plan
    ext.pykernels_build_info = {
        "torch_version": torch.__version__,
        "torch_git_version": getattr(torch.version, "git_version", None),
        "torch_cuda_version": torch.version.cuda,
        "sources": build.sources_digest(ROOT / CSRC),
        "backends": ["cpu", "cuda"] if plan.build else ["cpu"],
        "cuda_reason": plan.reason,
        "cuda_arch_list": os.environ["TORCH_CUDA_ARCH_LIST"] if plan.build else None,
        "cpu_arch": build.cpu_arch(),
        "debug": build.debug(),
    }
    return ext


if torch is None:
    print(
        "pykernels: torch is not importable in this build (pip isolates it): installing the sources; the kernels "
        "compile on first import against the torch you run (python -m pykernels build does it ahead of time), or "
        "build now with: pip install --no-build-isolation .",
        file=sys.stderr,
    )
    setup(cmdclass={"build_py": BuildPy})
else:
    if (newer_torch := support.check_torch(torch.__version__)) is not None:  # (an older one raises, naming the range)
        print(f"pykernels: {newer_torch}", file=sys.stderr)

    class BuildExtension(cpp_extension.BuildExtension):
        """cpp_extension's builder, which also records what the extension was built against."""

        def run(self):
            if not cpp_extension.is_ninja_available():
                print(
                    "pykernels: ninja not found, the build will be slow and serial (pip install ninja)", file=sys.stderr
                )
            plan = self.extensions[0].pykernels_plan
            compiler, inplace = self.compiler, self.inplace  # run() replaces the first and clears the second
            try:
                with build.cuda_home_for_build(cpp_extension, plan.cuda_home):
                    super().run()
            except Exception as error:
                if not plan.build or plan.forced:
                    raise
                # The CUDA half did not compile (its errors are above): the CPU half alone, rather than no package.
                reason = (
                    f"the CUDA kernels failed to compile ({build.first_compile_error(str(error))}; the compiler's "
                    "output is above): only the CPU kernels are built (PYKERNELS_CUDA=0 skips the CUDA half, "
                    "PYKERNELS_CUDA=1 makes this an error)"
                )
                print(f"pykernels: {reason}", file=sys.stderr)
                self.compiler, self.inplace = compiler, inplace
                cpu = build_extension(plan.without_cuda(reason))
                for ext in self.extensions:  # in place: finalize_options gave it setuptools' private attributes
                    ext.__dict__.update({k: v for k, v in vars(cpu).items() if not k.startswith("_")})
                super().run()
            for ext in self.extensions:
                info = getattr(ext, "pykernels_build_info", None)
                if info is not None:
                    library = Path(self.get_ext_fullpath(ext.name))
                    # its size and sha256, checked before each import: a library cut short would kill it (SIGBUS)
                    info = {**info, "library": build.library_record(library)}
                    with open(library.parent / "_build_info.json", "w") as f:
                        json.dump(info, f, indent=2)

    setup(
        ext_modules=[build_extension(build.plan_cuda(torch, cpp_extension))],
        cmdclass={"build_py": BuildPy, "build_ext": BuildExtension.with_options(use_ninja=True)},
        options={"bdist_wheel": {"py_limited_api": "cp311"}},
    )
