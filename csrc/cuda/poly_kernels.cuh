// CUDA kernels of poly, poly_backward and poly_mse: grid-stride loops over the data, the per-element math from
// common/poly_math.h (the same code the CPU kernels run), per-thread sums in acc_t reduced per block; the block
// partials are added by finish_sums_kernel. Torch-free: the glue (poly_cuda.cu) instantiates them with torch's types.
//   scalar_t: the data (float, double, or a 16-bit float type); math_t: float or double; acc_t: the sums (double).
#pragma once

#include <cstdint>

#include "../common/degree_dispatch.h"
#include "../common/poly_math.h"
#include "reduce.cuh"

namespace pykernels {
namespace cuda_detail {

__device__ __forceinline__ int64_t grid_start() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

template <int kDegree, typename scalar_t, typename math_t>
__global__ void poly_kernel(const scalar_t* __restrict__ x, const math_t* __restrict__ coeffs, int64_t degree,
                            int64_t n, scalar_t* __restrict__ y) {
  const int64_t deg = effective_degree<kDegree>(degree);
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    y[i] = static_cast<scalar_t>(horner<kMayFuse<math_t, scalar_t>>(coeffs, deg, static_cast<math_t>(x[i])));
  }
}

// partials[block][0] = sum r^2, partials[block][1 + k] = sum r x^k, r = p(x) - y. Instantiated for every degree
// (dispatch_every_degree): the sums are a fixed set of registers.
template <int kDegree, typename scalar_t, typename math_t, typename acc_t>
__global__ void poly_mse_partials_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                                         const math_t* __restrict__ coeffs, int64_t n,
                                         acc_t* __restrict__ partials) {
  static_assert(kDegree >= 0 && kDegree <= kMaxCudaDegree, "one kernel per degree");
  acc_t sums[kDegree + 2] = {};
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const math_t xi = static_cast<math_t>(x[i]);
    const math_t r = horner<kMayFuse<math_t, scalar_t>>(coeffs, kDegree, xi) - static_cast<math_t>(y[i]);
    sums[0] += static_cast<acc_t>(r * r);
    accumulate_powers(sums + 1, 1, kDegree, xi, r);
  }
  __shared__ acc_t scratch[kWarps];
#pragma unroll
  for (int s = 0; s < kDegree + 2; ++s) {
    const acc_t total = block_sum(sums[s], scratch);
    if (threadIdx.x == 0) partials[blockIdx.x * (kDegree + 2) + s] = total;
  }
}

// grad_x[i] = g_i p'(x_i); partials[block][k] = sum g x^k. derivative_coeffs: p''s (kDegree of them).
template <int kDegree, typename scalar_t, typename math_t, typename acc_t>
__global__ void poly_backward_partials_kernel(const scalar_t* __restrict__ grad_y, const scalar_t* __restrict__ x,
                                              const math_t* __restrict__ derivative_coeffs, int64_t n,
                                              scalar_t* __restrict__ grad_x, acc_t* __restrict__ partials) {
  static_assert(kDegree >= 0 && kDegree <= kMaxCudaDegree, "one kernel per degree");
  acc_t sums[kDegree + 1] = {};
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const math_t xi = static_cast<math_t>(x[i]);
    const math_t gi = static_cast<math_t>(grad_y[i]);
    grad_x[i] = static_cast<scalar_t>(gi * horner_derivative<kMayFuse<math_t, scalar_t>>(derivative_coeffs, kDegree, xi));
    accumulate_powers(sums, 1, kDegree, xi, gi);
  }
  __shared__ acc_t scratch[kWarps];
#pragma unroll
  for (int s = 0; s < kDegree + 1; ++s) {
    const acc_t total = block_sum(sums[s], scratch);
    if (threadIdx.x == 0) partials[blockIdx.x * (kDegree + 1) + s] = total;
  }
}

}  // namespace cuda_detail
}  // namespace pykernels
