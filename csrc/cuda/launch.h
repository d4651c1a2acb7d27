// Launch shapes shared by the CUDA glue files (torch-dependent: device properties).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

#include "reduce.cuh"

namespace pykernels {

// Enough blocks to keep every SM's memory pipeline busy (8 resident blocks per SM), never more than the data needs:
// each block leaves one partial sum per output, added in order by finish_sums_kernel.
inline int64_t grid_blocks(int64_t n) {
  const int64_t per_sm = 8 * static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  return std::max<int64_t>(1, std::min<int64_t>((n + cuda_detail::kThreads - 1) / cuda_detail::kThreads, per_sm));
}

// The CUDA reductions run every degree up to kMaxCudaDegree as a kernel of its own (sums in registers).
inline void check_cuda_degree(int64_t degree) {
  TORCH_CHECK_VALUE(degree <= cuda_detail::kMaxCudaDegree, "coeffs must have at most ", cuda_detail::kMaxCudaDegree + 1,
                    " entries (degree <= ", cuda_detail::kMaxCudaDegree, ") on CUDA, got degree ", degree);
}

// One thread per output of finish_sums_kernel, in whole warps.
inline int finish_threads(int64_t num_sums) { return static_cast<int>((num_sums + 31) / 32 * 32); }

}  // namespace pykernels
