#!/usr/bin/env bash
# The whole CUDA build on a machine with nvcc and no GPU: a venv with the CUDA build of the pinned torch (several
# GB through pip's cache), pykernels built with its CUDA kernels (PYKERNELS_CUDA=1) and linked, then imported with
# torch.cuda.is_available() False. Slower than CI's compile-only check (.ci/compile_cuda.py); run it before
# changing the build. Usage: bash .ci/cuda_build_check.sh [VENV_DIR] (default /tmp/pykernels-cuda-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-/tmp/pykernels-cuda-venv}"
start=$(date +%s)
command -v nvcc >/dev/null || { echo "cuda_build_check: nvcc not on PATH" >&2; exit 1; }
torch_version="$(sed -n 's/^torch==//p' .ci/constraints.txt)"

python3 -m venv --clear "$venv"
# The machine's pip configuration finds the local CPU wheel of torch first: off for the CUDA build.
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" "$venv/bin/pip" install -q "torch==$torch_version" ninja setuptools wheel \
    numpy numba matplotlib tqdm
echo "cuda_build_check: CUDA torch $torch_version installed in $(( $(date +%s) - start )) s"

# CUDA_HOME: the toolkit nvcc belongs to (torch guesses another otherwise); CUDA_INC_PATH: the cuBLAS/cuSPARSE/
# cuSOLVER headers of torch's nvidia-* wheels, which ATen/cuda includes and the toolkit here lacks.
# (nvcc on PATH may be a wrapper script: nvcc itself says where it lives)
export CUDA_HOME="$(readlink -f "$(nvcc --dryrun -c -x cu /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p')")"
export CUDA_INC_PATH="$("$venv/bin/python" -c 'import nvidia, pathlib; print(next(pathlib.Path(nvidia.__path__[0]).glob("cu[0-9]*/include")))')"
build=$(date +%s)
source_copy="$(mktemp -d)"  # the tracked files as they are now, so the build leaves this checkout's build/ alone
git ls-files -z | xargs -0 cp --parents -t "$source_copy"
PYKERNELS_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-2}" \
    "$venv/bin/pip" install -q --no-build-isolation --no-deps --no-cache-dir "$source_copy"
rm -rf "$source_copy"
echo "cuda_build_check: built and linked in $(( $(date +%s) - build )) s"

cd /tmp  # import the installed package, not the source folder
"$venv/bin/python" - <<'EOF'
import json, torch, pykernels
info = pykernels.build_info()
kernels = [op for op in ("poly", "poly_backward", "poly_mse", "dot", "dot_backward", "fit_poly", "poly_moments",
                         "fit_poly_moments", "linear_sgd_step", "philox_normal_", "linear_sgd_philox")
           if torch._C._dispatch_has_kernel_for_dispatch_key(f"pykernels::{op}", "CUDA")]
print(json.dumps({"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
                  "compiled_backends": info["compiled_backends"], "ops_with_cuda_kernels": kernels}, indent=1))
assert info["compiled_backends"] == ["cpu", "cuda"] and len(kernels) == 9
EOF
echo "cuda_build_check: ok in $(( $(date +%s) - start )) s"
