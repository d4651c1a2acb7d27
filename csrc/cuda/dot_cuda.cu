// CUDA glue of dot, dot_backward and linear_sgd_step (see poly_cuda.cu for the conventions).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "dot_kernels.cuh"
#include "launch.h"

namespace pykernels {
namespace {

using cuda_detail::kThreads;

at::Tensor dot_cuda(const at::Tensor& a_in, const at::Tensor& b_in) {
  check_dot_inputs(a_in, b_in, /*allow_reduced=*/true);
  const c10::cuda::OptionalCUDAGuard guard(a_in.device());
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  const int64_t n = a.numel();
  const int64_t blocks = grid_blocks(n);
  at::Tensor result = at::empty({}, a.options());
  at::Tensor partials = at::empty({blocks}, a.options().dtype(at::kDouble));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "dot_cuda", [&] {
    cuda_detail::dot_partials_kernel<scalar_t, double><<<blocks, kThreads, 0, stream>>>(
        a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), n, partials.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cuda_detail::finish_sums_kernel<double, scalar_t><<<1, finish_threads(1), 0, stream>>>(
        partials.const_data_ptr<double>(), blocks, 1, 1.0, 1.0, result.mutable_data_ptr<scalar_t>(), nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return result;
}

std::tuple<at::Tensor, at::Tensor> dot_backward_cuda(const at::Tensor& grad_in, const at::Tensor& a_in,
                                                     const at::Tensor& b_in) {
  check_dot_inputs(a_in, b_in, /*allow_reduced=*/true);
  check_same_dtype_and_device({{&a_in, "a"}, {&grad_in, "grad"}});
  check_scalar(grad_in, "grad");
  const c10::cuda::OptionalCUDAGuard guard(a_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor a = a_in.contiguous();
  const at::Tensor b = b_in.contiguous();
  at::Tensor grad_a = at::empty_like(a);
  at::Tensor grad_b = at::empty_like(b);
  const int64_t n = a.numel();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "dot_backward_cuda", [&] {
    using math_t = at::opmath_type<scalar_t>;
    cuda_detail::dot_backward_kernel<scalar_t, math_t><<<grid_blocks(n), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(), n,
        grad_a.mutable_data_ptr<scalar_t>(), grad_b.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_a, grad_b};
}

// The CPU kernel's two passes (cpu/dot_cpu.cpp): the partial sums of w.x, one thread for the error, the loss and
// b's step, then w -= step x; the step never leaves the device.
at::Tensor linear_sgd_step_cuda(at::Tensor& w, at::Tensor& b, const at::Tensor& x_in, const at::Tensor& y,
                                double lr) {
  check_linear_sgd_step_inputs(w, b, x_in, y);
  const c10::cuda::OptionalCUDAGuard guard(w.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t n = w.numel();
  const int64_t blocks = grid_blocks(n);
  at::Tensor loss = at::empty({}, w.options());
  at::Tensor step = at::empty({}, w.options());
  at::Tensor partials = at::empty({blocks}, w.options().dtype(at::kDouble));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "linear_sgd_step_cuda", [&] {
    cuda_detail::dot_partials_kernel<scalar_t, double><<<blocks, kThreads, 0, stream>>>(
        w.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), n, partials.mutable_data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cuda_detail::linear_sgd_step_finish_kernel<scalar_t><<<1, 1, 0, stream>>>(
        partials.const_data_ptr<double>(), blocks, y.const_data_ptr<scalar_t>(), lr, b.mutable_data_ptr<scalar_t>(),
        loss.mutable_data_ptr<scalar_t>(), step.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cuda_detail::subtract_scaled_kernel<scalar_t><<<grid_blocks(n), kThreads, 0, stream>>>(
        w.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), step.const_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CUDA, m) {
  m.impl("dot", &dot_cuda);
  m.impl("dot_backward", &dot_backward_cuda);
  m.impl("linear_sgd_step", &linear_sgd_step_cuda);
}

}  // namespace pykernels
