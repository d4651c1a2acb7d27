"""Compile the CUDA glue (csrc/cuda/*.cu) against the CUDA build of the pinned torch, on a machine with nvcc and no
GPU: CI's proof that the CUDA half builds.

The CPU torch of the test environment lacks nothing the compiler needs but the CUDA build's own headers and the
cuBLAS/cuSPARSE/cuSOLVER headers that ATen/cuda includes, so this fetches them: the CUDA torch wheel (the version
pinned in .ci/constraints.txt) and the nvidia-* wheels its cuda-toolkit requirement pins, through pip's download
cache, and unpacks their include folders. Each .cu file then compiles (object only: linking needs CUDA's runtime
libraries) with torch.utils.cpp_extension's nvcc flags and setup.py's, every warning of nvcc, ptxas (local memory
included) and the host compiler on the project's code an error; torch's and CUDA's headers are system headers.

    python .ci/compile_cuda.py [--cache DIR] [--arch 9.0]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER_PACKAGES = ("nvidia-cublas", "nvidia-cusparse", "nvidia-cusolver")


def pinned_torch() -> str:
    for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines():
        if line.startswith("torch=="):
            return line.split("==")[1].strip()
    raise SystemExit("compile_cuda: no torch pin in .ci/constraints.txt")


def download(requirement: str, into: Path) -> Path:
    """The wheel of `requirement` for this platform and Python, from the package index (pip's cache first). The
    machine's pip configuration (local find-links that hold the CPU torch) is switched off for this."""
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""}
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(into)]
    subprocess.run([*command, requirement], check=True, env=env)
    name = re.split(r"[=<>\[ ]", requirement)[0].replace("-", "_")
    return max(into.glob(f"{name}-*.whl"), key=lambda p: p.stat().st_mtime)


def requirement_pins(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def unpack(wheel: Path, prefix: str, into: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into, [n for n in archive.namelist() if n.startswith(prefix)])


def fetch_headers(cache: Path) -> tuple[Path, Path]:
    """(torch's include folder, the nvidia headers' include folder) of the CUDA torch build."""
    version = pinned_torch()
    headers = cache / f"torch-{version}-cuda-headers"
    torch_include, nvidia_include = headers / "torch" / "include", headers / "nvidia" / "cu13" / "include"
    if not (torch_include / "ATen" / "cuda" / "CUDAContext.h").exists() or not nvidia_include.exists():
        wheels = cache / "wheels"
        torch_wheel = download(f"torch=={version}", wheels)
        unpack(torch_wheel, "torch/include/", headers)
        toolkit = next(r for r in requirement_pins(torch_wheel) if r.startswith("cuda-toolkit"))
        toolkit_wheel = download(re.sub(r"\[.*?\]", "", toolkit.split(";")[0]), wheels)
        for pin in requirement_pins(toolkit_wheel):
            package = pin.split("==")[0].strip()
            if package in HEADER_PACKAGES and "extra == 'all'" in pin:
                unpack(download(pin.split(";")[0].strip(), wheels), "nvidia/", headers)
        nvidia_include = next(headers.glob("nvidia/cu[0-9]*/include"))
    return torch_include, nvidia_include


def nvcc_command(source: Path, output: Path, torch_include: Path, nvidia_include: Path, arch: str) -> list[str]:
    from torch.utils import cpp_extension  # the CPU torch of the same version: the same flags

    major, minor = arch.split(".")
    system_includes = [torch_include, torch_include / "torch" / "csrc" / "api" / "include", nvidia_include]
    return [
        "nvcc",
        "-c",
        str(source),
        "-o",
        str(output),
        *[flag for include in system_includes for flag in ("-isystem", str(include))],
        "-isystem",
        sysconfig.get_paths()["include"],
        *cpp_extension.COMMON_NVCC_FLAGS,
        "--compiler-options",
        "-fPIC",
        "-std=c++20",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DTORCH_EXTENSION_NAME=_C",
        f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}",
        *("-O3", "-lineinfo"),  # setup.py's
        *("-Werror", "all-warnings", "-Xptxas", "-warn-lmem-usage", "-Xcompiler", "-Wall", "-Xcompiler", "-Werror"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "pykernels-ci")
    parser.add_argument("--arch", default="9.0", help="the compute capability to compile for (default 9.0)")
    args = parser.parse_args(argv)
    if shutil.which("nvcc") is None:
        print("compile_cuda: nvcc not on PATH", file=sys.stderr)
        return 1
    start = time.perf_counter()
    torch_include, nvidia_include = fetch_headers(args.cache)
    print(f"compile_cuda: CUDA torch {pinned_torch()} headers ready in {time.perf_counter() - start:.0f} s")
    objects = args.cache / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    sources = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))

    def compile_one(source: Path) -> tuple[Path, float, subprocess.CompletedProcess]:
        begin = time.perf_counter()
        command = nvcc_command(source, objects / f"{source.stem}.o", torch_include, nvidia_include, args.arch)
        result = subprocess.run(command, capture_output=True, text=True, cwd=source.parent)
        return source, time.perf_counter() - begin, result

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(compile_one, sources))
    failed = False
    for source, seconds, result in results:
        status = "ok" if result.returncode == 0 else "FAILED"
        print(f"compile_cuda: {source.relative_to(ROOT)} {status} in {seconds:.0f} s")
        if result.returncode != 0:
            failed = True
            print(result.stdout + result.stderr, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
