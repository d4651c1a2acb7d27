// CUDA kernels of poly_moments and fit_poly_moments (torch-free; instantiated by moments_cuda.cu).
//
// poly_moments: per series row, float64 sums of weight * x^k with the products formed as the reference forms them
// (running products from the weight: weight, weight x, (weight x) x, ...), so inf and NaN come out the same. Every
// block leaves one partial per sum and row; finish_moments_kernel adds the blocks' partials in order. The sums of a
// launch are laid out per row as [power sums (power_count)][cross sums (cross_count)][square sum (0 or 1)].
//   scalar_t: the data (float or double), widened to double before any arithmetic.
#pragma once

#include <cstdint>

#include "../common/degree_dispatch.h"
#include "../common/poly_math.h"
#include "poly_kernels.cuh"
#include "reduce.cuh"

namespace pykernels {
namespace cuda_detail {

constexpr int kMomentsChunk = 16;  // sums per pass of moments_chunked_partials_kernel (registers)

// Compile-time degree (0..kMaxUnrolledDegree), one pass over the data, every sum in registers. For each row
// (blockIdx.y, striding by gridDim.y) of x (row stride x_stride: 0 when shared) and y (row stride n):
//   kPowers: sum x^p, p = 0..2D;   kCross: sum y x^k, k = 0..D, then sum y^2.
// partials[row][blockIdx.x][s], kSums sums per row and block.
template <int kDegree, bool kPowers, bool kCross, typename scalar_t>
__global__ void moments_partials_kernel(const scalar_t* __restrict__ x, int64_t x_stride,
                                        const scalar_t* __restrict__ y, int64_t n, int64_t rows,
                                        double* __restrict__ partials) {
  static_assert(kDegree >= 0 && kDegree <= kMaxUnrolledDegree, "one kernel per degree");
  static_assert(kPowers || kCross, "something to sum");
  constexpr int kPowerSums = kPowers ? 2 * kDegree + 1 : 0;
  constexpr int kSums = kPowerSums + (kCross ? kDegree + 2 : 0);
  __shared__ double scratch[kWarps];
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const scalar_t* xs = x + row * x_stride;
    const scalar_t* ys = y + row * n;
    double sums[kSums] = {};
    for (int64_t i = grid_start(); i < n; i += grid_stride()) {
      const double xi = static_cast<double>(xs[i]);
      if constexpr (kPowers) accumulate_powers(sums, 1, 2 * kDegree, xi, 1.0);
      if constexpr (kCross) {
        const double yi = static_cast<double>(ys[i]);
        accumulate_powers(sums + kPowerSums, 1, kDegree, xi, yi);
        sums[kSums - 1] += yi * yi;
      }
    }
    double* out = partials + (row * gridDim.x + blockIdx.x) * kSums;
#pragma unroll
    for (int s = 0; s < kSums; ++s) {
      const double total = block_sum(sums[s], scratch);
      if (threadIdx.x == 0) out[s] = total;
    }
  }
}

// Any degree: sum w x^k for k = 0..count-1 (w = 1 when weights is null, else weights[row][i]), kMomentsChunk
// powers per pass over the data; then, if `square`, sum w^2 at index `count`. Each element's running product is
// carried from one pass to the next in terms[row][i] (the thread that owns element i in one pass owns it in all:
// the same grid-stride indices), so the work is linear in the degree and the products are the reference's.
// Rows and partials as in moments_partials_kernel, count + square sums per row and block.
template <typename scalar_t>
__global__ void moments_chunked_partials_kernel(const scalar_t* __restrict__ x, int64_t x_stride,
                                                const scalar_t* __restrict__ weights, int64_t n, int64_t rows,
                                                int64_t count, bool square, double* __restrict__ terms,
                                                double* __restrict__ partials) {
  const int64_t num_sums = count + (square ? 1 : 0);
  __shared__ double scratch[kWarps];
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const scalar_t* xs = x + row * x_stride;
    const scalar_t* ws = weights == nullptr ? nullptr : weights + row * n;
    double* row_terms = terms + row * n;
    double* out = partials + (row * gridDim.x + blockIdx.x) * num_sums;
    for (int64_t first = 0; first < count; first += kMomentsChunk) {
      const bool more = count - first > kMomentsChunk;  // another pass follows: keep the running products
      double sums[kMomentsChunk] = {};
      for (int64_t i = grid_start(); i < n; i += grid_stride()) {
        const double xi = static_cast<double>(xs[i]);
        double term = first > 0 ? row_terms[i] : (ws == nullptr ? 1.0 : static_cast<double>(ws[i]));
#pragma unroll
        for (int j = 0; j < kMomentsChunk; ++j) {  // products past `count` are formed but never stored
          sums[j] += term;
          term *= xi;
        }
        if (more) row_terms[i] = term;
      }
#pragma unroll
      for (int j = 0; j < kMomentsChunk; ++j) {
        if (first + j < count) {  // the same in every thread: the block's barriers stay uniform
          const double total = block_sum(sums[j], scratch);
          if (threadIdx.x == 0) out[first + j] = total;
        }
      }
    }
    if (square) {
      double sum = 0.0;
      for (int64_t i = grid_start(); i < n; i += grid_stride()) {
        const double wi = ws == nullptr ? 1.0 : static_cast<double>(ws[i]);
        sum += wi * wi;
      }
      const double total = block_sum(sum, scratch);
      if (threadIdx.x == 0) out[count] = total;
    }
  }
}

// The blocks' partials (rows, blocks, num_sums) added in block order (sum_of_partials: compensated, deterministic)
// and routed by the layout above: power_out (rows, power_count), cross_out (rows, cross_count), square_out (rows,).
// Threads over the sums (x), rows over blockIdx.y; both stride.
__global__ void finish_moments_kernel(const double* __restrict__ partials, int64_t rows, int64_t blocks,
                                      int64_t power_count, int64_t cross_count, bool square,
                                      double* __restrict__ power_out, double* __restrict__ cross_out,
                                      double* __restrict__ square_out) {
  const int64_t num_sums = power_count + cross_count + (square ? 1 : 0);
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const double* row_partials = partials + row * blocks * num_sums;
    for (int64_t s = grid_start(); s < num_sums; s += grid_stride()) {
      const double total = sum_of_partials(row_partials, blocks, num_sums, s);
      if (s < power_count) {
        power_out[row * power_count + s] = total;
      } else if (s - power_count < cross_count) {
        cross_out[row * cross_count + (s - power_count)] = total;
      } else {
        square_out[row] = total;
      }
    }
  }
}

// --- fit_poly_moments ---------------------------------------------------------------------------------------------

// A vector of float64 values spaced `stride` apart in global memory (the runtime-degree kernel's state, laid out
// [index][series] so that a warp's series are adjacent).
struct StridedDoubles {
  double* data;
  int64_t stride;
  __device__ __forceinline__ double& operator[](int64_t i) const { return data[i * stride]; }
};

// One series' fit, the reference's arithmetic in float64: moments m[p] = power_sums[p] / N (A[j][k] = m[j + k]),
// b = cross_sums / N, s = square_sum / N; from c = coeffs_in, each step u = A c, the loss c.u - 2 c.b + s recorded
// before every record_every-th update, c -= 2 lr (u - b). V: double* (a compile-time degree's register arrays, every
// loop unrolled) or StridedDoubles (any degree).
template <typename V, typename out_t>
__device__ __forceinline__ void fit_moments_series(int64_t degree, const double* __restrict__ power_sums,
                                                   const double* __restrict__ cross_sums, double square_sum,
                                                   const out_t* __restrict__ coeffs_in, double lr, int64_t steps,
                                                   int64_t record_every, V m, V b, V c, V u,
                                                   out_t* __restrict__ trace, out_t* __restrict__ coeffs_out) {
  const double count = power_sums[0];
#pragma unroll
  for (int64_t p = 0; p <= 2 * degree; ++p) m[p] = power_sums[p] / count;
#pragma unroll
  for (int64_t k = 0; k <= degree; ++k) {
    b[k] = cross_sums[k] / count;
    c[k] = static_cast<double>(coeffs_in[k]);
  }
  const double offset = square_sum / count;
  const double two_lr = 2.0 * lr;
  int64_t until_record = 1;  // step 0 is recorded
  for (int64_t step = 0; step < steps; ++step) {
#pragma unroll
    for (int64_t j = 0; j <= degree; ++j) {
      double sum = 0.0;
#pragma unroll
      for (int64_t k = 0; k <= degree; ++k) sum += m[j + k] * c[k];
      u[j] = sum;
    }
    if (--until_record == 0) {
      double quadratic = 0.0, linear = 0.0;
#pragma unroll
      for (int64_t k = 0; k <= degree; ++k) {
        quadratic += c[k] * u[k];
        linear += c[k] * b[k];
      }
      *trace++ = static_cast<out_t>(quadratic - 2.0 * linear + offset);
      until_record = record_every;
    }
#pragma unroll
    for (int64_t k = 0; k <= degree; ++k) c[k] -= two_lr * (u[k] - b[k]);
  }
#pragma unroll
  for (int64_t k = 0; k <= degree; ++k) coeffs_out[k] = static_cast<out_t>(c[k]);
}

// One thread per series (grid-stride). power_sums (rows, 2D+1) with row stride power_stride (0: shared),
// cross_sums (series, D+1), square_sum (series,), coeffs_in (rows, D+1) with row stride coeffs_stride (0: shared);
// coeffs_out (series, D+1), trace (series, records). kDegree = kDynamicDegree: any degree, the state in
// work ((2D+1) + 3 (D+1) values per series, [index][series]); otherwise registers (work unused).
template <int kDegree, typename out_t>
__global__ void fit_poly_moments_kernel(const double* __restrict__ power_sums, int64_t power_stride,
                                        const double* __restrict__ cross_sums, const double* __restrict__ square_sum,
                                        const out_t* __restrict__ coeffs_in, int64_t coeffs_stride, int64_t degree,
                                        double lr, int64_t steps, int64_t record_every, int64_t records,
                                        int64_t series, double* __restrict__ work, out_t* __restrict__ coeffs_out,
                                        out_t* __restrict__ trace) {
  const int64_t deg = effective_degree<kDegree>(degree);
  const int64_t terms = deg + 1;
  for (int64_t s = grid_start(); s < series; s += grid_stride()) {
    const double* ps = power_sums + s * power_stride;
    const double* cs = cross_sums + s * terms;
    const out_t* c0 = coeffs_in + s * coeffs_stride;
    out_t* trace_row = trace + s * records;
    out_t* c_out = coeffs_out + s * terms;
    if constexpr (kDegree == kDynamicDegree) {
      const StridedDoubles m{work + s, series};
      const StridedDoubles b{m.data + (2 * deg + 1) * series, series};
      const StridedDoubles c{b.data + terms * series, series};
      const StridedDoubles u{c.data + terms * series, series};
      fit_moments_series(deg, ps, cs, square_sum[s], c0, lr, steps, record_every, m, b, c, u, trace_row, c_out);
    } else {
      double m[2 * kDegree + 1], b[kDegree + 1], c[kDegree + 1], u[kDegree + 1];
      fit_moments_series<double*>(kDegree, ps, cs, square_sum[s], c0, lr, steps, record_every, m, b, c, u,
                                  trace_row, c_out);
    }
  }
}

}  // namespace cuda_detail
}  // namespace pykernels
