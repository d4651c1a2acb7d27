// Block reductions for the CUDA kernels: warp shuffles, then one value per warp through shared memory.
// Torch-free, so CI compiles it with nvcc on machines whose torch has no CUDA.
#pragma once

#include <cstdint>

namespace pykernels {
namespace cuda_detail {

constexpr int kThreads = 256;          // threads per block of every reduction kernel (a multiple of 32)
constexpr int kWarps = kThreads / 32;
// The largest degree of the CUDA reductions (poly_mse, poly_backward, fit_poly): each degree up to it is a kernel of
// its own, so the per-power sums stay in registers.
constexpr int kMaxCudaDegree = 15;

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  return value;
}

// Sum of `value` over the block; the result is valid in thread 0. `scratch` holds kWarps values and may be reused
// by the next call (the trailing barrier protects it).
template <typename T>
__device__ __forceinline__ T block_sum(T value, T* scratch) {
  value = warp_sum(value);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = threadIdx.x < kWarps ? scratch[lane] : T(0);
  if (warp == 0) value = warp_sum(value);
  __syncthreads();
  return value;
}

// sum over blocks of partials[block][s] (num_sums per block), blocks added in order with compensation:
// deterministic, and as accurate as the partials.
template <typename acc_t>
__device__ acc_t sum_of_partials(const acc_t* __restrict__ partials, int64_t blocks, int64_t num_sums, int64_t s) {
  acc_t total = 0, compensation = 0;
  for (int64_t block = 0; block < blocks; ++block) {
    const acc_t value = partials[block * num_sums + s];
    const acc_t t = total + value;
    compensation += (fabs(total) >= fabs(value)) ? (total - t) + value : (value - t) + total;
    total = t;
  }
  return isfinite(total) ? total + compensation : total;  // a compensation would turn inf into NaN
}

// out[s] = scale_s * sum_of_partials(s) (one thread per output: no host round trip). The first output may go to
// its own tensor (poly_mse's loss).
template <typename acc_t, typename out_t>
__global__ void finish_sums_kernel(const acc_t* __restrict__ partials, int64_t blocks, int64_t num_sums,
                                   acc_t first_scale, acc_t rest_scale, out_t* __restrict__ first_out,
                                   out_t* __restrict__ rest_out) {
  const int64_t s = threadIdx.x;
  if (s >= num_sums) return;
  const acc_t total = sum_of_partials(partials, blocks, num_sums, s);
  if (first_out != nullptr && s == 0) {
    *first_out = static_cast<out_t>(total * first_scale);
  } else {
    rest_out[s - (first_out != nullptr ? 1 : 0)] = static_cast<out_t>(total * rest_scale);
  }
}

}  // namespace cuda_detail
}  // namespace pykernels
