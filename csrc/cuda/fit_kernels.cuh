// CUDA kernels of the fused training loops (torch-free; instantiated by fit_cuda.cu): fit_poly with one warp per
// series, and the large problem's epochs with the sample drawn in-kernel (common/philox.h).
#pragma once

#include <cstdint>

#include "../common/degree_dispatch.h"
#include "../common/philox.h"
#include "../common/poly_math.h"
#include "poly_kernels.cuh"
#include "reduce.cuh"

namespace pykernels {
namespace cuda_detail {

constexpr int kFitThreads = 32;  // one warp per series: a step's sums are reduced by shuffles, without barriers

// The sum over the warp, in every lane (butterfly): every lane then applies the same update to its own copy of the
// coefficients, so they stay in registers and agree bit for bit.
template <typename T>
__device__ __forceinline__ T warp_allreduce(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// `steps` gradient-descent steps on mean((p(x) - y)^2) for series blockIdx.x (block = one warp): y (B, n), x (n,)
// shared (x_stride 0) or (B, n); coeffs (B, D+1) initial and final; trace (B, records) the loss before every
// record_every-th step. Residuals and powers in scalar_t (the step-by-step loop's math), sums in float64. One kernel
// per degree (dispatch_every_degree): coefficients and sums stay in registers.
template <int kDegree, typename scalar_t>
__global__ void fit_poly_kernel(const scalar_t* __restrict__ x, int64_t x_stride, const scalar_t* __restrict__ y,
                                int64_t n, scalar_t lr, int64_t steps, int64_t record_every, int64_t records,
                                scalar_t* __restrict__ coeffs, scalar_t* __restrict__ trace) {
  static_assert(kDegree >= 0 && kDegree <= kMaxCudaDegree, "one kernel per degree");
  const int64_t series = blockIdx.x;
  const int lane = threadIdx.x;
  const scalar_t* xs = x + series * x_stride;
  const scalar_t* ys = y + series * n;
  scalar_t c[kDegree + 1];
#pragma unroll
  for (int k = 0; k <= kDegree; ++k) c[k] = coeffs[series * (kDegree + 1) + k];
  const double inv_n = 1.0 / static_cast<double>(n);
  int64_t until_record = 1, record = 0;
  for (int64_t step = 0; step < steps; ++step) {
    double sums[kDegree + 2] = {};
    for (int64_t i = lane; i < n; i += kFitThreads) {
      const scalar_t xi = xs[i];
      const scalar_t r = horner(c, kDegree, xi) - ys[i];
      sums[0] += static_cast<double>(r) * static_cast<double>(r);
      accumulate_powers(sums + 1, 1, kDegree, xi, r);
    }
#pragma unroll
    for (int s = 0; s < kDegree + 2; ++s) sums[s] = warp_allreduce(sums[s]);
#pragma unroll
    for (int k = 0; k <= kDegree; ++k) c[k] -= lr * static_cast<scalar_t>(2.0 * inv_n * sums[k + 1]);
    if (--until_record == 0) {
      if (lane == 0) trace[series * records + record] = static_cast<scalar_t>(sums[0] * inv_n);
      ++record;
      until_record = record_every;
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k <= kDegree; ++k) coeffs[series * (kDegree + 1) + k] = c[k];
  }
}

// The device-side state of linear_sgd_philox between passes: the squared errors and the step still to apply.
template <typename scalar_t>
struct PhiloxEpochState {
  scalar_t* losses;        // (epochs,)
  scalar_t* bias;          // b, updated in place
  scalar_t* pending_step;  // lr 2 e of the epoch whose update the next pass applies
};

// One epoch's pass (see cpu/philox_cpu.cpp): w -= pending_step x_previous, then partials[block] = (w . x, sum x)
// for this epoch's sample. One thread per Philox counter: its four elements 64 m + 16 k + l. previous_stream /
// stream < 0: no such sample. keep != nullptr: samples are read from / written to it instead of regenerated.
template <typename scalar_t>
__global__ void linear_sgd_philox_pass_kernel(scalar_t* __restrict__ w, int64_t n, uint64_t seed,
                                              int64_t previous_stream, int64_t stream,
                                              const scalar_t* __restrict__ pending_step, float* __restrict__ keep,
                                              double* __restrict__ partials) {
  const int64_t counters = (n + philox::kBlockSize - 1) / philox::kBlockSize * philox::kBlockLanes;
  const scalar_t step = previous_stream >= 0 ? *pending_step : scalar_t(0);
  double dot = 0, sum = 0;
  for (int64_t j = grid_start(); j < counters; j += grid_stride()) {
    const int64_t base = (j / philox::kBlockLanes) * philox::kBlockSize + j % philox::kBlockLanes;
    float previous[4], current[4];
    if (previous_stream >= 0 && keep == nullptr) philox::normals_of_counter(seed, previous_stream, j, previous);
    if (stream >= 0) philox::normals_of_counter(seed, stream, j, current);
    for (int k = 0; k < 4; ++k) {
      const int64_t i = base + k * philox::kBlockLanes;
      if (i >= n) break;
      scalar_t wi = w[i];
      if (previous_stream >= 0) wi -= step * static_cast<scalar_t>(keep != nullptr ? keep[i] : previous[k]);
      if (stream >= 0) {
        if (keep != nullptr) keep[i] = current[k];
        dot += static_cast<double>(wi) * static_cast<double>(current[k]);
        sum += static_cast<double>(current[k]);
      }
      w[i] = wi;
    }
  }
  __shared__ double scratch[kWarps];
  dot = block_sum(dot, scratch);
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = dot;
    partials[2 * blockIdx.x + 1] = sum;
  }
}

// After a pass: (dot, sum x) from the blocks' partials in block order, then the epoch's error, loss, bias step and
// pending step, all on the device (one thread; no host round trip between epochs).
template <typename scalar_t>
__global__ void linear_sgd_philox_finish_kernel(const double* __restrict__ partials, int64_t blocks, int64_t epoch,
                                                double lr, double target_weight, double target_bias,
                                                PhiloxEpochState<scalar_t> state) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double dot = 0, sum = 0;
  for (int64_t block = 0; block < blocks; ++block) {
    dot += partials[2 * block];
    sum += partials[2 * block + 1];
  }
  const double error = dot + static_cast<double>(*state.bias) - (target_weight * sum + target_bias);
  state.losses[epoch] = static_cast<scalar_t>(error * error);
  const scalar_t step = static_cast<scalar_t>(lr * 2.0 * error);
  *state.pending_step = step;
  *state.bias -= step;
}

// out[i] = element i of sample (seed, stream).
__global__ void philox_normal_kernel(float* __restrict__ out, int64_t n, uint64_t seed, int64_t stream) {
  const int64_t counters = (n + philox::kBlockSize - 1) / philox::kBlockSize * philox::kBlockLanes;
  for (int64_t j = grid_start(); j < counters; j += grid_stride()) {
    float values[4];
    philox::normals_of_counter(seed, stream, j, values);
    const int64_t base = (j / philox::kBlockLanes) * philox::kBlockSize + j % philox::kBlockLanes;
    for (int k = 0; k < 4; ++k) {
      const int64_t i = base + k * philox::kBlockLanes;
      if (i < n) out[i] = values[k];
    }
  }
}

}  // namespace cuda_detail
}  // namespace pykernels
