"""CUDA: the torch-free kernel headers compile with nvcc (always, where nvcc exists), launches follow the rules,
and on a GPU: 16-bit inputs, side streams, CUDA-graph capture of a training step, and kernels that really run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import pykernels
from pykernels import reference

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

HEADER_TU = """
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/dot_kernels.cuh"
#include "cuda/fit_kernels.cuh"
#include "cuda/poly_kernels.cuh"

namespace k = pykernels::cuda_detail;

template <typename scalar_t, typename math_t, int kDegree>
void instantiate() {
  k::poly_kernel<kDegree, scalar_t, math_t><<<1, k::kThreads>>>(nullptr, nullptr, 4, 0, nullptr);
  k::poly_mse_partials_kernel<kDegree, scalar_t, math_t, double><<<1, k::kThreads>>>(nullptr, nullptr, nullptr, 0,
                                                                                      nullptr);
  k::poly_backward_partials_kernel<kDegree, scalar_t, math_t, double>
      <<<1, k::kThreads>>>(nullptr, nullptr, nullptr, 0, nullptr, nullptr);
  k::dot_partials_kernel<scalar_t, double><<<1, k::kThreads>>>(nullptr, nullptr, 0, nullptr);
  k::dot_backward_kernel<scalar_t, math_t><<<1, k::kThreads>>>(nullptr, nullptr, nullptr, 0, nullptr, nullptr);
  k::finish_sums_kernel<double, scalar_t><<<1, 32>>>(nullptr, 0, 0, 1.0, 1.0, nullptr, nullptr);
}

template <typename scalar_t, int kDegree>
void instantiate_fused() {
  k::fit_poly_kernel<kDegree, scalar_t><<<1, k::kFitThreads>>>(nullptr, 0, nullptr, 4, 1, 1, 1, 1, nullptr, nullptr);
  k::linear_sgd_philox_pass_kernel<scalar_t><<<1, k::kThreads>>>(nullptr, 4, 0, -1, 0, nullptr, nullptr, nullptr);
  k::linear_sgd_philox_finish_kernel<scalar_t><<<1, 32>>>(nullptr, 1, 0, 1.0, 3.0, -2.0, {});
  k::linear_sgd_step_finish_kernel<scalar_t><<<1, 1>>>(nullptr, 0, nullptr, 0.1, nullptr, nullptr, nullptr);
  k::subtract_scaled_kernel<scalar_t><<<1, k::kThreads>>>(nullptr, nullptr, nullptr, 0);
}
template void instantiate_fused<float, 4>();
template void instantiate_fused<double, k::kMaxCudaDegree>();

void instantiate_sampler() { k::philox_normal_kernel<<<1, k::kThreads>>>(nullptr, 4, 0, 0); }

template void instantiate<float, float, 4>();
template void instantiate<double, double, k::kMaxCudaDegree>();
template void instantiate<__half, float, 0>();
template void instantiate<__nv_bfloat16, float, 8>();
"""


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_kernel_headers_compile_with_nvcc(tmp_path):
    """The kernels are torch-free headers: nvcc compiles every dtype x degree instantiation without torch, with no
    warning and no kernel using local memory (ptxas's -warn-lmem-usage, an error here): the reductions' sums and
    the fits' coefficients live in registers at every degree."""
    source = tmp_path / "kernels.cu"
    source.write_text(HEADER_TU)
    result = subprocess.run(
        [
            "nvcc",
            "-std=c++17",
            "-arch=sm_90",
            "-Werror",
            "all-warnings",
            "-Xptxas",
            "-warn-lmem-usage",
            "-I",
            str(ROOT / "csrc"),
            "-c",
            str(source),
            "-o",
            str(tmp_path / "kernels.o"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_every_launch_uses_the_current_stream_and_is_checked(source):
    text = source.read_text()
    launches = re.findall(r"<<<([^>]*)>>>", text)
    assert launches
    for arguments in launches:
        assert arguments.count(",") == 3 and arguments.strip().endswith("stream"), arguments
    assert text.count("C10_CUDA_KERNEL_LAUNCH_CHECK()") >= len(launches)
    assert "OptionalCUDAGuard" in text and "getCurrentCUDAStream" in text


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_16_bit_inputs_with_float32_math(dtype):
    x = torch.linspace(-1, 1, 4097, device="cuda").to(dtype)
    y = torch.sin(x.float()).to(dtype)
    coeffs = torch.tensor([0.1, -0.2, 0.3, 0.05], device="cuda").to(dtype)
    loss, grad = pykernels.poly_mse(x, y, coeffs)
    expected_loss, expected_grad = reference.poly_mse_torch(x.double(), y.double(), coeffs.double())
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(loss.double(), expected_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=tol, atol=tol)
    torch.testing.assert_close(pykernels.dot(x, y).double(), torch.dot(x.double(), y.double()), rtol=tol, atol=tol)


@needs_gpu
def test_results_match_on_a_side_stream():
    x = torch.rand(1 << 20, device="cuda")
    coeffs = torch.rand(5, device="cuda")
    expected = pykernels.poly_mse(x, x, coeffs)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = pykernels.poly_mse(x, x, coeffs)
    torch.cuda.current_stream().wait_stream(stream)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


@needs_gpu
def test_cuda_graph_capture_of_a_training_step_matches_eager():
    x = torch.linspace(0, 5, 100, device="cuda")
    y = torch.sin(x)
    lr = 1e-5

    def eager_fit(steps):
        w = torch.zeros(5, device="cuda", requires_grad=True)
        for _ in range(steps):
            loss = pykernels.PolyMSE.apply(x, y, w)[0]
            w.grad = None
            loss.backward()
            with torch.no_grad():
                w -= lr * w.grad
        return w.detach()

    w = torch.zeros(5, device="cuda", requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture
        pykernels.PolyMSE.apply(x, y, w)[0].backward()
    torch.cuda.current_stream().wait_stream(side)
    w.grad = None
    graph = torch.cuda.CUDAGraph()
    optimizer = torch.optim.SGD([w], lr=lr)
    with torch.cuda.graph(graph):
        optimizer.zero_grad(set_to_none=False)
        loss = pykernels.poly_mse(x, y, w).loss
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        w.zero_()
    for _ in range(100):
        graph.replay()
    torch.testing.assert_close(w.detach(), eager_fit(100), rtol=1e-5, atol=1e-8)


@needs_gpu
def test_the_kernels_really_run_on_the_gpu():
    x = torch.rand(1 << 16, device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        pykernels.poly_mse(x, x, torch.rand(3, device="cuda"))
        torch.cuda.synchronize()
    names = [event.name for event in profile.events()]
    assert any("poly_mse_partials_kernel" in name for name in names), names
