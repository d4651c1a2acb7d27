// Deterministic, accurate, vectorized parallel reductions for the CPU kernels.
//
// The input is cut into fixed chunks (independent of the thread count, so results are bit-identical for
// 1 and N threads). Within a chunk, elements are processed kLanes at a time as float64 SIMD vectors (GCC/Clang
// vector extensions: AVX-512, AVX2 or SSE2 code depending on -march), each lane keeping its own partial sums,
// so nothing is reassociated; lanes are added in a fixed order, and chunk results are combined with
// compensated summation.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/degree_dispatch.h"
#include "../common/poly_math.h"

namespace pykernels {

constexpr int kLanes = 8;                       // one AVX-512 register of doubles
constexpr int64_t kReduceChunk = 1 << 15;       // elements per chunk: large enough to amortize a task
constexpr int64_t kElementwiseGrain = 1 << 15;  // below this, elementwise kernels stay single-threaded

typedef double LaneVector __attribute__((vector_size(kLanes * sizeof(double))));

template <>
inline LaneVector splat<LaneVector, double>(double c) {
  return LaneVector{} + c;
}

// kLanes consecutive elements, widened to float64.
template <typename scalar_t>
inline LaneVector load_lanes(const scalar_t* data) {
  typedef scalar_t InputVector __attribute__((vector_size(kLanes * sizeof(scalar_t))));
  InputVector v;
  std::memcpy(&v, data, sizeof(v));
  return __builtin_convertvector(v, LaneVector);
}

// The last, partial group of a chunk: `count` (< kLanes) elements, the other lanes set to `fill`.
template <typename scalar_t>
inline LaneVector load_partial_lanes(const scalar_t* data, int64_t count, double fill) {
  LaneVector v = splat<LaneVector>(fill);
  for (int64_t lane = 0; lane < count; ++lane) v[lane] = static_cast<double>(data[lane]);
  return v;
}

// Loads the group starting at i of a chunk ending at end: full, or padded with `fill`.
template <typename scalar_t>
inline LaneVector load_group(const scalar_t* data, int64_t i, int64_t end, double fill) {
  return i + kLanes <= end ? load_lanes(data + i) : load_partial_lanes(data + i, end - i, fill);
}

// v with its lanes from `count` on set to 0: a partial group's padding then adds nothing to any sum, whatever the
// math made of it (with a coefficient that is not finite, p(0) is not finite either).
inline LaneVector zero_padding(LaneVector v, int64_t count) {
  for (int64_t lane = count; lane < kLanes; ++lane) v[lane] = 0.0;
  return v;
}

// One Sum (a LaneVector of partial sums, or an AccurateSum of them) per output. Sized at compile time when the
// degree is known, so the sums live in registers.
template <int kNumSums, typename Sum = LaneVector>
class LaneSums {
 public:
  explicit LaneSums(int64_t /*num_sums*/) { values_.fill(Sum{}); }
  Sum* data() { return values_.data(); }

 private:
  std::array<Sum, kNumSums> values_;
};

template <typename Sum>
class LaneSums<kDynamicDegree, Sum> {
 public:
  explicit LaneSums(int64_t num_sums) : values_(num_sums, Sum{}) {}
  Sum* data() { return values_.data(); }

 private:
  std::vector<Sum> values_;
};

// Folds the lanes of each output into out[s], always in the same order.
inline void fold_lanes(const LaneVector* sums, int64_t num_sums, double* out) {
  for (int64_t s = 0; s < num_sums; ++s) {
    double total = 0.0;
    for (int lane = 0; lane < kLanes; ++lane) total += sums[s][lane];
    out[s] = total;
  }
}

// Folds the lanes of each accurate sum into its pair (out[2 s], out[2 s + 1]) = (value, error), always in the
// same order. The error is 0 where the value is not finite (it would be NaN there) or where it is not (the error
// terms overflowed on their own, the value being finite: then the plain sum, as the reference's).
inline void fold_accurate_lanes(const AccurateSum<LaneVector>* sums, int64_t num_sums, double* out) {
  for (int64_t s = 0; s < num_sums; ++s) {
    CompensatedSum<double> total;
    double error = 0.0;
    for (int lane = 0; lane < kLanes; ++lane) {
      total.add(sums[s].value[lane]);
      error += sums[s].error[lane];
    }
    const double total_error = total.compensation + error;
    out[2 * s] = total.sum;
    out[2 * s + 1] = (total.sum - total.sum) == 0.0 && (total_error - total_error) == 0.0 ? total_error : 0.0;
  }
}

// out[0..num_sums) = sums over [0, n), where chunk_fn(begin, end, partial) writes one chunk's num_sums sums. With
// kParts = 2 each sum is a (value, error) pair (fold_accurate_lanes), in the chunks' partials and in out alike: the
// parts of every chunk are added with one compensated sum, whose sum and compensation are the result's pair. Chunks hold chunk_size elements (fixed for a kernel, never derived
// from the thread count).
template <int kParts = 1, typename ChunkFn>
void reduce_in_chunks(int64_t n, int64_t num_sums, double* out, const ChunkFn& chunk_fn,
                      int64_t chunk_size = kReduceChunk) {
  const int64_t num_chunks = std::max<int64_t>(1, (n + chunk_size - 1) / chunk_size);
  if (num_chunks == 1 && kParts == 1) {
    chunk_fn(0, n, out);
    return;
  }
  const int64_t width = num_sums * kParts;
  std::vector<double> partials(num_chunks * width);
  at::parallel_for(0, num_chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t chunk = first; chunk < last; ++chunk) {
      chunk_fn(chunk * chunk_size, std::min(n, (chunk + 1) * chunk_size), partials.data() + chunk * width);
    }
  });
  for (int64_t s = 0; s < num_sums; ++s) {
    CompensatedSum<double> total;
    for (int64_t chunk = 0; chunk < num_chunks; ++chunk) {
      for (int part = 0; part < kParts; ++part) total.add(partials[chunk * width + s * kParts + part]);
    }
    if constexpr (kParts == 1) {
      out[s] = total.result();
    } else {
      static_assert(kParts == 2);
      out[2 * s] = total.sum;
      out[2 * s + 1] = (total.sum - total.sum) == 0.0 && (total.compensation - total.compensation) == 0.0
                           ? total.compensation
                           : 0.0;
    }
  }
}

// (sum + error) / n, correctly rounded but for the pair's own error: the quotient's remainder (exact by an FMA) and the
// sum's error are divided once more and added.
inline double accurate_mean(double sum, double error, double n) {
  const double quotient = sum / n;
  if ((quotient - quotient) != 0.0) return quotient;
  return quotient + (fused_multiply_add(-quotient, n, sum) + error) / n;
}

// Coefficients widened to float64 once per call (the kernels do all their math in float64).
using WideCoeffs = c10::SmallVector<double, kMaxUnrolledDegree + 1>;

template <typename scalar_t>
WideCoeffs widen_coeffs(const at::Tensor& coeffs) {
  const scalar_t* data = coeffs.const_data_ptr<scalar_t>();
  return WideCoeffs(data, data + coeffs.numel());
}

}  // namespace pykernels
