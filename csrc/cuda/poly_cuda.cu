// CUDA glue of poly, poly_backward and poly_mse: checks, dtype and degree dispatch, launches on torch's current
// stream under a device guard, every launch checked. No host synchronization anywhere (CUDA-graph capturable).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "launch.h"
#include "poly_kernels.cuh"

namespace pykernels {
namespace {

using cuda_detail::kThreads;

// The coefficients in the kernels' math type (float for float16/bfloat16/float32 data, double for double).
template <typename math_t>
at::Tensor math_coeffs(const at::Tensor& coeffs) {
  return coeffs.to(c10::CppTypeToScalarType<math_t>::value).contiguous();
}

at::Tensor poly_cuda(const at::Tensor& x_in, const at::Tensor& coeffs_in) {
  check_poly_inputs(x_in, coeffs_in, /*allow_reduced=*/true);
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t n = x.numel();
  const int64_t degree = coeffs_in.numel() - 1;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "poly_cuda", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const at::Tensor coeffs = math_coeffs<math_t>(coeffs_in);
    dispatch_degree(degree, [&](auto kDegree) {
      cuda_detail::poly_kernel<decltype(kDegree)::value, scalar_t, math_t><<<grid_blocks(n), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), coeffs.const_data_ptr<math_t>(), degree, n, y.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> poly_backward_cuda(const at::Tensor& grad_y_in, const at::Tensor& x_in,
                                                      const at::Tensor& coeffs_in) {
  check_poly_inputs(x_in, coeffs_in, /*allow_reduced=*/true);
  check_same_dtype_and_device({{&x_in, "x"}, {&grad_y_in, "grad_y"}});
  check_same_shape(x_in, "x", grad_y_in, "grad_y");
  const int64_t degree = coeffs_in.numel() - 1;
  check_cuda_degree(degree);
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad_y = grad_y_in.contiguous();
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_coeffs = at::empty({degree + 1}, x.options());
  const int64_t n = x.numel();
  const int64_t blocks = grid_blocks(n);
  at::Tensor partials = at::empty({blocks, degree + 1}, x.options().dtype(at::kDouble));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "poly_backward_cuda", [&] {
    using math_t = at::opmath_type<scalar_t>;
    // p''s coefficients (1 c_1, ..., D c_D), computed on the device (no host synchronization)
    const at::Tensor coeffs = math_coeffs<math_t>(coeffs_in);
    const at::Tensor derivative =
        (coeffs.narrow(0, 1, degree) * at::arange(1, degree + 1, coeffs.options())).contiguous();
    dispatch_every_degree<cuda_detail::kMaxCudaDegree>(degree, [&](auto kDegree) {
      cuda_detail::poly_backward_partials_kernel<decltype(kDegree)::value, scalar_t, math_t, double>
          <<<blocks, kThreads, 0, stream>>>(grad_y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                            derivative.const_data_ptr<math_t>(), n,
                                            grad_x.mutable_data_ptr<scalar_t>(), partials.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    cuda_detail::finish_sums_kernel<double, scalar_t><<<1, finish_threads(degree + 1), 0, stream>>>(
        partials.const_data_ptr<double>(), blocks, degree + 1, 1.0, 1.0, nullptr,
        grad_coeffs.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_coeffs};
}

std::tuple<at::Tensor, at::Tensor> poly_mse_cuda(const at::Tensor& x_in, const at::Tensor& y_in,
                                                 const at::Tensor& coeffs_in) {
  check_poly_inputs(x_in, coeffs_in, /*allow_reduced=*/true);
  check_same_dtype_and_device({{&x_in, "x"}, {&y_in, "y"}});
  check_same_shape(x_in, "x", y_in, "y");
  const int64_t degree = coeffs_in.numel() - 1;
  check_cuda_degree(degree);
  const c10::cuda::OptionalCUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  const int64_t n = x.numel();
  const int64_t blocks = grid_blocks(n);
  at::Tensor loss = at::empty({}, x.options());
  at::Tensor grad_coeffs = at::empty({degree + 1}, x.options());
  at::Tensor partials = at::empty({blocks, degree + 2}, x.options().dtype(at::kDouble));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "poly_mse_cuda", [&] {
    using math_t = at::opmath_type<scalar_t>;
    const at::Tensor coeffs = math_coeffs<math_t>(coeffs_in);
    dispatch_every_degree<cuda_detail::kMaxCudaDegree>(degree, [&](auto kDegree) {
      cuda_detail::poly_mse_partials_kernel<decltype(kDegree)::value, scalar_t, math_t, double>
          <<<blocks, kThreads, 0, stream>>>(x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                            coeffs.const_data_ptr<math_t>(), n, partials.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const double inv_n = 1.0 / static_cast<double>(n);
    cuda_detail::finish_sums_kernel<double, scalar_t><<<1, finish_threads(degree + 2), 0, stream>>>(
        partials.const_data_ptr<double>(), blocks, degree + 2, inv_n, 2.0 * inv_n, loss.mutable_data_ptr<scalar_t>(),
        grad_coeffs.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {loss, grad_coeffs};
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CUDA, m) {
  m.impl("poly", &poly_cuda);
  m.impl("poly_backward", &poly_backward_cuda);
  m.impl("poly_mse", &poly_mse_cuda);
}

}  // namespace pykernels
