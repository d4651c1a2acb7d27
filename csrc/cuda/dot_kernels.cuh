// CUDA kernels of dot, dot_backward and linear_sgd_step (torch-free; instantiated by dot_cuda.cu).
#pragma once

#include <cstdint>

#include "poly_kernels.cuh"
#include "reduce.cuh"

namespace pykernels {
namespace cuda_detail {

// partials[block] = sum a_i b_i over the block's grid-stride share, products and sums in acc_t.
template <typename scalar_t, typename acc_t>
__global__ void dot_partials_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n,
                                    acc_t* __restrict__ partials) {
  acc_t sum = 0;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    sum += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i]);
  }
  __shared__ acc_t scratch[kWarps];
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// grad_a = grad * b, grad_b = grad * a; grad is read on the device (no .item(): capture-safe, no host sync).
template <typename scalar_t, typename math_t>
__global__ void dot_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ a,
                                    const scalar_t* __restrict__ b, int64_t n, scalar_t* __restrict__ grad_a,
                                    scalar_t* __restrict__ grad_b) {
  const math_t g = static_cast<math_t>(*grad);
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    grad_a[i] = static_cast<scalar_t>(g * static_cast<math_t>(b[i]));
    grad_b[i] = static_cast<scalar_t>(g * static_cast<math_t>(a[i]));
  }
}

// linear_sgd_step between its two passes (one thread): e = w.x (the partials of dot_partials_kernel) + b - y,
// loss = e^2, step = lr 2 e, b -= step; the step stays on the device for the second pass (no host round trip).
// The same float64 arithmetic as the CPU kernel.
template <typename scalar_t>
__global__ void linear_sgd_step_finish_kernel(const double* __restrict__ partials, int64_t blocks,
                                              const scalar_t* __restrict__ y, double lr, scalar_t* __restrict__ b,
                                              scalar_t* __restrict__ loss, scalar_t* __restrict__ step) {
  const double error = sum_of_partials(partials, blocks, 1, 0) + static_cast<double>(*b) - static_cast<double>(*y);
  *loss = static_cast<scalar_t>(error * error);
  const scalar_t s = static_cast<scalar_t>(lr * 2.0 * error);
  *step = s;
  *b -= s;
}

// w -= step x, the step read on the device.
template <typename scalar_t>
__global__ void subtract_scaled_kernel(scalar_t* __restrict__ w, const scalar_t* __restrict__ x,
                                       const scalar_t* __restrict__ step, int64_t n) {
  const scalar_t s = *step;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) w[i] -= s * x[i];
}

}  // namespace cuda_detail
}  // namespace pykernels
